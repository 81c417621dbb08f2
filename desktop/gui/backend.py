"""What the tray drives: a Dockyard machine, or a bare engine on a Linux host.

The tray and the dashboard never talk to a VM or a socket directly; they hold
a ``Backend`` and call it from worker threads (every method blocks)::

    backend = MachineBackend("default")          # the machine layer's VM
    backend.start(progress=lambda stage: ...)    # boots, reports StageEvents
    backend.status().docker_host                 # unix:///.../docker.sock

    backend = EngineOnlyBackend("unix:///run/dockyard/docker.sock")
    backend.status().state                       # RUNNING while it answers

``MachineBackend`` wraps ``desktop.machine`` (see docs/MACHINES.md) and
converts its types into the small ``Status``/``Stage`` records below, so the
GUI keeps working with any version of that layer that keeps its documented
names. ``EngineOnlyBackend`` is for a Linux host where the engine runs
beside the desktop: there is nothing to boot, so it only reports whether the
socket answers.

This module has no Qt in it.
"""

from __future__ import annotations

import enum
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.gui.engine_client import EngineClient, EngineError

log = logging.getLogger(__name__)

DEFAULT_LINUX_HOST = "unix:///run/dockyard/docker.sock"


class BackendError(Exception):
    """A machine or engine action failed; the message is meant for the user."""


class State(enum.StrEnum):
    """The machine's state as the tray shows it (mirrors ``MachineState``)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    ERROR = "error"
    CRASHED = "crashed"

    @property
    def busy(self) -> bool:
        return self in (State.STARTING, State.STOPPING)

    @property
    def failed(self) -> bool:
        return self in (State.ERROR, State.CRASHED)


@dataclass
class Status:
    """One snapshot of the machine; the fields of ``MachineStatus``."""

    name: str
    state: State
    backend: str = ""
    cpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0
    disk_used_bytes: int | None = None
    uptime_seconds: float | None = None
    docker_host: str | None = None
    error: str | None = None
    log_path: Path | None = None


@dataclass
class Stage:
    """A step of a start (``StageEvent``): "disk", "boot", "ssh", "engine"..."""

    stage: str
    message: str
    done: bool = False
    failed: bool = False
    elapsed: float = 0.0


@dataclass
class MachineConfig:
    """The machine's shape, from the settings; becomes a ``MachineSpec``."""

    name: str = "default"
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 20
    shares: list[str] = field(default_factory=lambda: [str(Path.home())])
    backend: str = "qemu"


Progress = Callable[[Stage], None]


class Backend(ABC):
    """The machine behind the tray. Every method blocks: call from a worker."""

    #: Whether Start/Stop/Restart/Reset mean anything for this backend.
    controllable = True
    #: Shown in the dashboard and the tray's tooltip.
    description = ""

    @abstractmethod
    def status(self) -> Status:
        """The current state; never raises (a failure is an ERROR status)."""

    @abstractmethod
    def start(self, progress: Progress | None = None) -> Status:
        """Boot the machine; raises BackendError."""

    @abstractmethod
    def stop(self) -> Status:
        """Shut the machine down; raises BackendError."""

    def restart(self, progress: Progress | None = None) -> Status:
        """Stop, then start; raises BackendError."""
        self.stop()
        return self.start(progress)

    @abstractmethod
    def reset(self, config: MachineConfig) -> Status:
        """Delete the machine and create it again from ``config``."""

    @abstractmethod
    def apply(self, config: MachineConfig) -> bool:
        """Store a new shape; True when it only takes effect after a restart."""

    @abstractmethod
    def log_path(self) -> Path | None:
        """The machine's (or engine's) log file, for Troubleshoot > Logs."""


class EngineOnlyBackend(Backend):
    """An engine socket with no machine behind it (Dockyard on a Linux host)."""

    controllable = False

    def __init__(self, docker_host: str | None = None) -> None:
        self.docker_host = (
            docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_LINUX_HOST
        )
        self.description = "Engine on this computer"
        self._client = EngineClient(self.docker_host)

    def status(self) -> Status:
        status = Status(name="host", state=State.STOPPED, backend="host")
        status.docker_host = self.docker_host
        try:
            info = self._client.info()
        except EngineError as err:
            status.error = str(err)
            return status
        status.state = State.RUNNING
        status.cpus = int(info.get("NCPU") or 0)
        status.memory_mib = int(info.get("MemTotal") or 0) // (1024 * 1024)
        status.disk_used_bytes = self._client.disk_used()
        return status

    def _not_ours(self) -> BackendError:
        return BackendError(
            f"The engine at {self.docker_host} runs outside Dockyard's control; "
            "start or stop it the way it was started (systemd, setup.sh)."
        )

    def start(self, progress: Progress | None = None) -> Status:
        raise self._not_ours()

    def stop(self) -> Status:
        raise self._not_ours()

    def restart(self, progress: Progress | None = None) -> Status:
        raise self._not_ours()

    def reset(self, config: MachineConfig) -> Status:
        raise self._not_ours()

    def apply(self, config: MachineConfig) -> bool:
        return False

    def log_path(self) -> Path | None:
        path = Path("/var/log/dockyard/engine.log")
        return path if path.exists() else None


class MachineBackend(Backend):
    """A Dockyard machine through ``desktop.machine``'s Python API.

    ``manager`` is a ``MachineManager``; tests may hand in any object with
    the same methods (``get``, ``create``, ``remove``).
    """

    def __init__(
        self, config: MachineConfig | None = None, manager: Any | None = None
    ) -> None:
        self.config = config or MachineConfig()
        self._manager = manager
        self.description = f"Machine {self.config.name!r}"

    @property
    def manager(self) -> Any:
        if self._manager is None:
            # Imported on first use (a worker thread): it pulls in paramiko
            # and libvirt, which the window need not wait for.
            try:
                from desktop.machine import MachineManager
            except ImportError as err:
                raise BackendError(
                    f"The machine layer is not available: {err}"
                ) from err
            self._manager = MachineManager()
        return self._manager

    def _machine(self, create: bool = False) -> Any | None:
        try:
            return self.manager.get(self.config.name)
        except Exception as err:
            # MachineNotFound (a fake manager in tests raises KeyError).
            if type(err).__name__ != "MachineNotFound" and not isinstance(
                err, LookupError
            ):
                raise
            log.debug("machine %s not found: %s", self.config.name, err)
            if not create:
                return None
        log.info("creating machine %s", self.config.name)
        try:
            return self.manager.create(self._spec(self.config))
        except Exception as err:
            raise BackendError(f"Could not create the machine: {err}") from err

    def _require(self) -> Any:
        """The machine, created from the config when there is none yet."""
        machine = self._machine(create=True)
        if machine is None:
            raise BackendError(f"No machine named {self.config.name!r}.")
        return machine

    def _spec(self, config: MachineConfig) -> Any:
        from desktop.machine import MachineSpec

        return MachineSpec(
            name=config.name,
            cpus=config.cpus,
            memory_mib=config.memory_mib,
            disk_gib=config.disk_gib,
            shares=[str(s) for s in config.shares],
            backend=config.backend,
        )

    def status(self) -> Status:
        try:
            machine = self._machine()
            if machine is None:
                return Status(
                    name=self.config.name,
                    state=State.STOPPED,
                    backend=self.config.backend,
                    cpus=self.config.cpus,
                    memory_mib=self.config.memory_mib,
                    disk_gib=self.config.disk_gib,
                )
            return convert_status(machine.status())
        except Exception as err:
            log.warning("machine status failed", exc_info=True)
            return Status(
                name=self.config.name,
                state=State.ERROR,
                backend=self.config.backend,
                error=str(err),
            )

    def start(self, progress: Progress | None = None) -> Status:
        machine = self._require()

        def relay(event: Any) -> None:
            if progress is not None:
                progress(convert_stage(event))

        log.info("starting machine %s", self.config.name)
        self._call(machine.start, "start", progress=relay)
        return self.status()

    def stop(self) -> Status:
        machine = self._machine()
        if machine is not None:
            log.info("stopping machine %s", self.config.name)
            self._call(machine.stop, "stop")
        return self.status()

    def restart(self, progress: Progress | None = None) -> Status:
        machine = self._require()

        def relay(event: Any) -> None:
            if progress is not None:
                progress(convert_stage(event))

        log.info("restarting machine %s", self.config.name)
        try:
            self._call(machine.restart, "restart", progress=relay)
        except BackendError:
            raise
        except TypeError:
            # A layer whose restart() takes no progress callback.
            self._call(machine.restart, "restart")
        return self.status()

    def reset(self, config: MachineConfig) -> Status:
        log.info("resetting machine %s to factory defaults", config.name)
        if self._machine() is not None:
            try:
                self.manager.remove(self.config.name, force=True)
            except Exception as err:
                raise BackendError(f"Could not remove the machine: {err}") from err
        self.config = config
        self._require()
        return self.status()

    def apply(self, config: MachineConfig) -> bool:
        old, self.config = self.config, config
        machine = self._machine()
        if machine is None:
            return False
        self._call(machine.update, "update", self._spec(config))
        changed = (old.cpus, old.memory_mib, old.disk_gib, old.shares, old.backend) != (
            config.cpus,
            config.memory_mib,
            config.disk_gib,
            config.shares,
            config.backend,
        )
        return changed and self.status().state is State.RUNNING

    def log_path(self) -> Path | None:
        machine = self._machine()
        path = getattr(machine, "log_path", None) if machine is not None else None
        return Path(path) if path else None

    def _call(
        self, method: Callable[..., Any], what: str, *args: Any, **kw: Any
    ) -> Any:
        try:
            return method(*args, **kw)
        except TypeError:
            raise
        except Exception as err:
            log.warning("machine %s failed: %s", what, err)
            raise BackendError(f"Could not {what} the machine: {err}") from err


def convert_status(raw: Any) -> Status:
    """A ``MachineStatus`` (or anything with its fields) as a ``Status``."""
    state_value = getattr(raw.state, "value", raw.state)
    try:
        state = State(str(state_value).lower())
    except ValueError:
        state = State(str(getattr(raw.state, "name", "error")).lower())
    log_path = getattr(raw, "log_path", None)
    return Status(
        name=raw.name,
        state=state,
        backend=str(getattr(raw, "backend", "")),
        cpus=int(getattr(raw, "cpus", 0) or 0),
        memory_mib=int(getattr(raw, "memory_mib", 0) or 0),
        disk_gib=int(getattr(raw, "disk_gib", 0) or 0),
        disk_used_bytes=getattr(raw, "disk_used_bytes", None),
        uptime_seconds=getattr(raw, "uptime_seconds", None),
        docker_host=getattr(raw, "docker_host", None),
        error=getattr(raw, "error", None),
        log_path=Path(log_path) if log_path else None,
    )


def convert_stage(raw: Any) -> Stage:
    """A ``StageEvent`` as a ``Stage``."""
    return Stage(
        stage=str(getattr(raw, "stage", "")),
        message=str(getattr(raw, "message", "")),
        done=bool(getattr(raw, "done", False)),
        failed=bool(getattr(raw, "failed", False)),
        elapsed=float(getattr(raw, "elapsed", 0.0) or 0.0),
    )


def uptime_text(seconds: float | None) -> str:
    """``3h 12m`` style; an em dash when unknown."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
