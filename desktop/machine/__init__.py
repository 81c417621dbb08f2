"""Dockyard machines: the VMs that run the engine, as one Python API.

The CLI (``desktop.cli``) and the tray app use only what is exported here::

    manager = MachineManager()
    machine = manager.create(MachineSpec(name="default"))
    machine.start(progress=print)       # StageEvent per stage
    os.environ["DOCKER_HOST"] = machine.docker_host

See docs/MACHINES.md for the stages, the files and the errors.
"""

from desktop.machine.errors import (
    AcceleratorError,
    BackendError,
    BootError,
    EngineError,
    ForwardError,
    ImageError,
    MachineError,
    MachineExists,
    MachineNotFound,
    SSHError,
    StageError,
)
from desktop.machine.manager import Machine, MachineManager
from desktop.machine.spec import (
    BACKENDS,
    STAGES,
    MachineSpec,
    MachineState,
    MachineStatus,
    StageEvent,
)

__all__ = [
    "BACKENDS",
    "STAGES",
    "AcceleratorError",
    "BackendError",
    "BootError",
    "EngineError",
    "ForwardError",
    "ImageError",
    "Machine",
    "MachineError",
    "MachineExists",
    "MachineManager",
    "MachineNotFound",
    "MachineSpec",
    "MachineState",
    "MachineStatus",
    "SSHError",
    "StageError",
    "StageEvent",
]
