"""Errors of the machine layer: one root, one subclass per start stage.

A failed ``Machine.start()`` raises the subclass of the stage that failed, so
a caller can say "the SSH stage failed, see machine.log" without parsing text.
"""

from __future__ import annotations

from pathlib import Path


class MachineError(Exception):
    """Root of every machine-layer error; ``stage`` and ``log_path`` may be set."""

    stage: str | None = None

    def __init__(
        self, message: str, stage: str | None = None, log_path: Path | None = None
    ) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage
        self.log_path = log_path

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_path is not None:
            text += f" (log: {self.log_path})"
        return text


class MachineNotFound(MachineError):
    """No machine of that name."""


class MachineExists(MachineError):
    """A machine of that name already exists."""


class StageError(MachineError):
    """A start stage failed; ``stage`` names it."""


class ImageError(StageError):
    stage = "image"


class AcceleratorError(StageError):
    stage = "accelerator"


class BootError(StageError):
    stage = "boot"


class SSHError(StageError):
    stage = "ssh"


class EngineError(StageError):
    stage = "engine"


class ForwardError(StageError):
    stage = "forward"


class BackendError(MachineError):
    """A hypervisor tool or API failed (libvirt, VBoxManage, PowerShell)."""
