"""Containers: create, start, stop, adopt after an engine restart."""

from __future__ import annotations

from engine.component import Component


class ContainerManager(Component):
    pass
