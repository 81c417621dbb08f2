"""The hypervisor behind a machine, as one small interface.

Each backend (``backend_qemu``, ``backend_virtualbox``, ``backend_hyperv``)
boots the same guest: kernel + initramfs + read-only root disk + the
machine's data disk, a NAT network with the guest's SSH reachable on a host
loopback port, and the machine's shares. The machine layer does the rest
(SSH, engine, forwarding) the same way for all of them::

    backend = get_backend("qemu")
    backend.start(VMConfig(...))
    backend.state(dirs)        # "running", "stopped"
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from desktop.machine.errors import MachineError
from desktop.machine.files import MachineDir


@dataclass
class VMConfig:
    """Everything a backend needs to boot one machine."""

    dirs: MachineDir
    cpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: str
    ssh_port: int
    shares: list[str] = field(default_factory=list)
    accelerator: str = "tcg"

    def share_tag(self, index: int) -> str:
        """The 9p mount tag (or shared folder name) of share ``index``."""
        return f"dyshare{index}"


class Backend(Protocol):
    name: str

    def accelerators(self) -> list[str]:
        """Hardware accelerators worth probing here, best first."""
        ...

    def probe(self, accelerator: str, config: VMConfig, timeout: float) -> bool:
        """Boot a throwaway VM with ``accelerator``; True if it really ran."""
        ...

    def start(self, config: VMConfig) -> None:
        """Define and boot the VM; raises ``BackendError``."""
        ...

    def state(self, dirs: MachineDir) -> str:
        """``running`` or ``stopped`` (the VM is not there or not running)."""
        ...

    def shutdown(self, dirs: MachineDir) -> None:
        """Press the ACPI power button."""
        ...

    def kill(self, dirs: MachineDir) -> None:
        """Power off at once; no error when already off."""
        ...

    def remove(self, dirs: MachineDir) -> None:
        """Delete the VM definition and anything the backend made for it."""
        ...

    def add_port(self, dirs: MachineDir, proto: str, host_ip: str, port: int) -> None:
        """Forward host ``host_ip:port`` to the guest's same port (UDP here)."""
        ...

    def remove_port(
        self, dirs: MachineDir, proto: str, host_ip: str, port: int
    ) -> None: ...


_MODULES = {
    "qemu": "desktop.machine.backend_qemu",
    "virtualbox": "desktop.machine.backend_virtualbox",
    "hyperv": "desktop.machine.backend_hyperv",
}


def get_backend(name: str) -> Backend:
    """The backend object for ``name``; raises ``MachineError`` if unknown."""
    if name not in _MODULES:
        raise MachineError(
            f"unknown backend {name!r}: choose one of {', '.join(_MODULES)}"
        )
    module = importlib.import_module(_MODULES[name])
    backend: Backend = module.create_backend()
    return backend
