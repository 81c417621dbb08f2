"""Distribution API v2: pull, push and login."""

from __future__ import annotations

from engine.component import Component


class RegistryService(Component):
    pass
