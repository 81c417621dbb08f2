"""The machine's state, shared by the tray, the dashboard and the settings.

``MachineController`` owns the ``Backend`` and is the only object that calls
it. Actions run on the thread pool; what they change comes back as signals::

    controller.statusChanged  -> Status        every new snapshot
    controller.stage          -> Stage         each step of a start
    controller.started / stopped / failed(msg) the notifications
    controller.engineEvent    -> dict          one engine /events message
    controller.engineReady    -> EngineClient  (re)connected: reload tables

While the machine runs, an ``EventsWatcher`` holds the engine's event stream.
The controller does not poll the machine: it asks for a status after every
action, and again when the event stream drops (the engine or the VM went
away), which is how a crash shows up in the tray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from desktop.gui.backend import (
    Backend,
    BackendError,
    MachineConfig,
    Progress,
    Stage,
    State,
    Status,
)
from desktop.gui.engine_client import EngineClient
from desktop.gui.workers import EventsWatcher, submit

log = logging.getLogger(__name__)


class MachineController(QObject):
    statusChanged = Signal(object)
    stage = Signal(object)
    started = Signal()
    stopped = Signal()
    failed = Signal(str)
    engineEvent = Signal(object)
    engineReady = Signal(object)
    engineLost = Signal(str)
    applied = Signal(bool)

    def __init__(self, backend: Backend, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.status = Status(name="", state=State.STOPPED)
        self.last_stage: Stage | None = None
        self.client: EngineClient | None = None
        self._watcher: EventsWatcher | None = None
        self._action: str | None = None
        self._refreshing = False

    # reading

    @property
    def busy(self) -> bool:
        return self._action is not None or self.status.state.busy

    def refresh(self) -> None:
        """Ask the backend for a fresh status (once at a time)."""
        if self._refreshing:
            return
        self._refreshing = True

        def done(status: Status) -> None:
            self._refreshing = False
            self._set_status(status)

        def failed(err: Exception) -> None:
            self._refreshing = False
            self._set_status(Status(self.status.name, State.ERROR, error=str(err)))

        submit(self.backend.status, done=done, failed=failed)

    # actions

    def start(self) -> None:
        self._run("start", State.STARTING, self._start_job)

    def stop(self) -> None:
        self._run("stop", State.STOPPING, lambda report: self.backend.stop())

    def restart(self) -> None:
        self._run("restart", State.STARTING, self._restart_job)

    def reset(self, config: MachineConfig) -> None:
        self._run("reset", State.STOPPING, lambda report: self.backend.reset(config))

    def apply(self, config: MachineConfig) -> None:
        """Store a new machine shape; ``applied(needs_restart)`` follows."""

        def failed(err: Exception) -> None:
            self.failed.emit(f"Could not apply the settings: {err}")

        submit(
            lambda: self.backend.apply(config),
            done=lambda restart: self.applied.emit(restart),
            failed=failed,
        )

    def _start_job(self, report: Progress) -> Status:
        return self.backend.start(progress=report)

    def _restart_job(self, report: Progress) -> Status:
        return self.backend.restart(progress=report)

    def _run(
        self, action: str, interim: State, job: Callable[[Progress], Status]
    ) -> None:
        if self._action is not None:
            log.info("%s ignored: %s is still running", action, self._action)
            return
        if not self.backend.controllable:
            self.failed.emit(
                f"{self.backend.description} is managed outside Dockyard; "
                f"it cannot {action} from here."
            )
            return
        self._action = action
        self.last_stage = None
        previous = self.status
        self._set_status(_with_state(previous, interim))

        def done(status: Status) -> None:
            self._action = None
            self._set_status(status)
            if status.state is State.RUNNING and action in ("start", "restart"):
                self.started.emit()
            elif status.state is State.STOPPED and action in ("stop", "reset"):
                self.stopped.emit()
            elif status.state.failed:
                self.failed.emit(status.error or f"The machine failed to {action}.")

        def failed(err: Exception) -> None:
            self._action = None
            message = str(err) if isinstance(err, BackendError) else f"{action}: {err}"
            self._set_status(_with_state(previous, State.ERROR, message))
            self.failed.emit(message)
            self.refresh()

        submit(job, done=done, failed=failed, progress=self._on_stage)

    def _on_stage(self, stage: Stage) -> None:
        self.last_stage = stage
        self.stage.emit(stage)

    # state

    def _set_status(self, status: Status) -> None:
        old = self.status
        self.status = status
        if old.state is State.RUNNING and status.state.failed and self._action is None:
            self.failed.emit(status.error or "The machine stopped unexpectedly.")
        self._follow_engine(status)
        self.statusChanged.emit(status)

    def _follow_engine(self, status: Status) -> None:
        # A bare engine is watched even while it is down: the watcher's retry
        # is what notices it coming back. A machine's engine only while it runs.
        watch = status.state is State.RUNNING or not self.backend.controllable
        host = status.docker_host if watch else None
        current = self.client.host if self.client is not None else None
        if host == current:
            return
        self.stop_watching()
        if host is None:
            return
        # Made here, on the GUI thread, without any call: it connects on
        # first use, which is on the watcher's thread.
        self.client = EngineClient(host)
        watcher = EventsWatcher(self.client, self)
        watcher.received.connect(self._on_engine_event)
        watcher.connected.connect(self._on_engine_connected)
        watcher.disconnected.connect(self._on_engine_lost)
        self._watcher = watcher
        watcher.start()

    def _on_engine_event(self, event: object) -> None:
        self.engineEvent.emit(event)

    def _on_engine_connected(self) -> None:
        if self.status.state is not State.RUNNING:
            self.refresh()
        if self.client is not None:
            self.engineReady.emit(self.client)

    def _on_engine_lost(self, reason: str) -> None:
        self.engineLost.emit(reason)
        # The stream ends when the engine or its machine goes away: find out
        # which, once, rather than polling the machine all along.
        if self._action is None:
            self.refresh()

    def stop_watching(self) -> None:
        """End the event stream (before quitting, or when the engine goes)."""
        watcher, self._watcher = self._watcher, None
        self.client = None
        if watcher is not None:
            watcher.stop()
            watcher.deleteLater()

    def shutdown(self) -> None:
        self.stop_watching()


def _with_state(status: Status, state: State, error: str | None = None) -> Status:
    copy = Status(**vars(status))
    copy.state = state
    copy.error = error
    return copy
