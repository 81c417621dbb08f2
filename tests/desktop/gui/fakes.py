"""A stand-in for ``desktop.machine`` at the tray's boundary.

A real machine boots a VM (about 15 s under TCG here); booting one per tray
test would test the machine layer, which has its own tests. These fakes
have the documented API of ``MachineManager`` and ``Machine``
(docs/MACHINES.md): ``get``/``create``/``remove``, ``status()``,
``start(progress)``, ``stop()``, ``restart(progress)``, ``update(spec)``.
Their calls block like the real ones, so the tray must run them off the GUI
thread for the tests to pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FakeStatus:
    name: str
    state: str
    backend: str = "qemu"
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 20
    disk_used_bytes: int = 1_500_000_000
    uptime_seconds: float | None = None
    docker_host: str | None = None
    error: str | None = None
    log_path: Path = Path("/nonexistent/machine.log")


@dataclass
class FakeStage:
    stage: str
    message: str
    done: bool = False
    failed: bool = False
    elapsed: float = 0.0


@dataclass
class FakeMachine:
    spec: Any
    state: str = "stopped"
    fail_start: str | None = None
    docker_host: str | None = None
    calls: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    log_path: Path = Path("/nonexistent/machine.log")

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def _record(self, call: str) -> None:
        self.calls.append(call)
        self.threads.append(threading.current_thread().name)

    def status(self) -> FakeStatus:
        self.threads.append(threading.current_thread().name)
        return FakeStatus(
            name=self.name,
            state=self.state,
            cpus=self.spec.cpus,
            memory_mib=self.spec.memory_mib,
            uptime_seconds=42.0 if self.state == "running" else None,
            docker_host=self.docker_host if self.state == "running" else None,
            error=self.fail_start if self.state == "error" else None,
        )

    def start(self, progress: Callable[[FakeStage], None] | None = None) -> None:
        self._record("start")
        for number, stage in enumerate(("image", "boot", "ssh", "engine")):
            if progress:
                progress(FakeStage(stage, f"{stage}…", elapsed=number))
            if self.fail_start and stage == "ssh":
                self.state = "error"
                if progress:
                    progress(FakeStage(stage, self.fail_start, failed=True))
                raise RuntimeError(self.fail_start)
        self.state = "running"

    def stop(self) -> None:
        self._record("stop")
        self.state = "stopped"

    def restart(self, progress: Callable[[FakeStage], None] | None = None) -> None:
        self._record("restart")
        self.stop()
        self.start(progress)

    def update(self, spec: Any) -> None:
        self._record("update")
        self.spec = spec


class FakeManager:
    def __init__(self) -> None:
        self.machines: dict[str, FakeMachine] = {}
        self.removed: list[str] = []
        self.threads: list[str] = []

    def get(self, name: str) -> FakeMachine:
        self.threads.append(threading.current_thread().name)
        return self.machines[name]  # KeyError, like MachineNotFound

    def create(self, spec: Any) -> FakeMachine:
        machine = FakeMachine(spec)
        self.machines[spec.name] = machine
        return machine

    def remove(self, name: str, force: bool = False) -> None:
        self.removed.append(name)
        del self.machines[name]
