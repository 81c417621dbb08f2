"""The daemon: one object that owns every component of the engine.

API handlers reach the components through ``req.app``::

    container = req.app.containers.get(req.params["name"])
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from engine.component import Component
from engine.config import Config
from engine.containers.execs import ExecManager
from engine.containers.manager import ContainerManager
from engine.events import EventBus
from engine.images.store import ImageStore
from engine.network.manager import NetworkManager
from engine.registry.service import RegistryService
from engine.storage.volumes import VolumeStore

if TYPE_CHECKING:
    from engine.build.builder import Builder

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        self.started_at = time.time()
        for path in (config.data_root, config.exec_root):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(config.data_root, 0o711)

        # Order matters: each may use those built before it.
        self.images = ImageStore(self)
        self.volumes = VolumeStore(self)
        self.networks = NetworkManager(self)
        self.containers = ContainerManager(self)
        self.execs = ExecManager(self)
        self.registry = RegistryService(self)
        self._builder: Builder | None = None
        self.components: list[Component] = [
            self.images,
            self.volumes,
            self.networks,
            self.containers,
            self.registry,
        ]

    @property
    def builder(self) -> Builder:
        """The builder, imported and made at the first build request.

        Its modules take about half a second to import in a machine under
        emulation, which ``dockyard machine start`` would otherwise wait for.
        """
        if self._builder is None:
            from engine.build.builder import Builder

            self._builder = Builder(self)
        return self._builder

    async def start(self) -> None:
        for component in self.components:
            await component.start()
        log.info("engine ready, data in %s", self.config.data_root)

    async def stop(self) -> None:
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", type(component).__name__)
