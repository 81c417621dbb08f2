"""What a machine is (``MachineSpec``) and how it is doing (``MachineStatus``).

These are plain data shared by the CLI, the GUI and the backends::

    spec = MachineSpec(name="dev", cpus=4, memory_mib=4096, shares=["/src"])
    spec.validate()
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop.machine.errors import MachineError

BACKENDS = ("qemu", "virtualbox", "hyperv")
STAGES = ("image", "accelerator", "boot", "ssh", "engine", "forward", "ready")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")


def _home_share() -> list[str]:
    return [str(Path.home())]


@dataclass
class MachineSpec:
    """The user's choices for a machine; ``validate()`` checks them."""

    name: str = "default"
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 20
    shares: list[str] = field(default_factory=_home_share)
    backend: str = "qemu"

    def validate(self) -> None:
        """Raise ``MachineError`` with a user-facing sentence for bad values."""
        if not _NAME.match(self.name):
            raise MachineError(
                f"invalid machine name {self.name!r}: use 1-31 lowercase letters, "
                "digits, '-' or '_', starting with a letter or digit"
            )
        if self.backend not in BACKENDS:
            raise MachineError(
                f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}"
            )
        if not 1 <= self.cpus <= 64:
            raise MachineError(f"--cpus must be between 1 and 64, not {self.cpus}")
        if not 256 <= self.memory_mib <= 262144:
            raise MachineError(
                f"--memory must be between 256 and 262144 MiB, not {self.memory_mib}"
            )
        if not 1 <= self.disk_gib <= 4096:
            raise MachineError(
                f"--disk must be between 1 and 4096 GiB, not {self.disk_gib}"
            )
        for share in self.shares:
            path = Path(share)
            if not path.is_absolute():
                raise MachineError(f"share {share!r} is not an absolute path")
            if not path.is_dir():
                raise MachineError(f"share {share!r} is not an existing folder")
            if path == Path("/") or any(
                path == Path(p) or Path(p) in path.parents
                for p in ("/proc", "/sys", "/dev", "/run", "/var/lib/dockyard")
            ):
                raise MachineError(f"share {share!r} would hide a system folder")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class MachineState(enum.StrEnum):
    """Where a machine is in its life; the values are what the CLI prints."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    ERROR = "error"
    CRASHED = "crashed"

    def __str__(self) -> str:
        return self.value


@dataclass
class MachineStatus:
    """A snapshot of one machine, cheap enough to poll from a tray timer."""

    name: str
    state: MachineState
    backend: str
    cpus: int
    memory_mib: int
    disk_gib: int
    disk_used_bytes: int
    uptime_seconds: float | None
    docker_host: str | None
    error: str | None
    log_path: Path

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["log_path"] = str(self.log_path)
        return data


@dataclass
class StageEvent:
    """One step of ``Machine.start()``, sent when it begins and when it ends."""

    stage: str
    message: str
    done: bool = False
    failed: bool = False
    elapsed: float = 0.0
