"""Networks: the default bridge, user networks, sandboxes, published ports."""

from __future__ import annotations

from engine.component import Component


class NetworkManager(Component):
    pass
