"""Named and anonymous volumes of the local driver."""

from __future__ import annotations

from engine.component import Component


class VolumeStore(Component):
    pass
