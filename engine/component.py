"""The base of the daemon's parts: each is built with the daemon, then started."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.daemon import Daemon


class Component:
    """A part of the daemon with a lifecycle.

    ``start`` runs in order of construction (images before containers), ``stop``
    in reverse. ``stop`` must leave running containers alone: they outlive the
    engine and are adopted again at the next start.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config
        self.events = daemon.events

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
