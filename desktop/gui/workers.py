"""Blocking work off the GUI thread, results back as Qt signals.

Two shapes of work:

- one call that returns (list the containers, stop the machine): ``submit``
  runs it on the shared ``QThreadPool`` and calls back on the GUI thread::

      submit(client.containers, done=self.show_containers, failed=self.show_error)

- a stream that lasts (``/events``, a followed log): a ``QThread`` of its own
  that holds the connection and emits one signal per item. ``stop()`` closes
  the connection from the GUI thread, which ends the blocking read at once.

Neither polls: the threads sleep in a socket read until the engine says
something. After a lost connection ``EventsWatcher`` waits (1 s, doubling
to 30 s) before it tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from desktop.gui.engine_client import EngineClient, EngineError, Stream

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 30.0

# Tasks stay referenced here until their callbacks ran on the GUI thread.
_pending: set[Task] = set()


class Task(QObject):
    """One blocking call on the pool; callbacks run on the GUI thread."""

    _done = Signal(object)
    _failed = Signal(object)
    _progress = Signal(object)
    finished = Signal()

    def __init__(
        self,
        fn: Callable[..., Any],
        done: Callable[[Any], None] | None = None,
        failed: Callable[[Exception], None] | None = None,
        progress: Callable[[Any], None] | None = None,
        owner: QObject | None = None,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.owner = owner
        self.on_done = done
        self.on_failed = failed
        self.on_progress = progress
        # Connected to this QObject's own slots: Qt queues them to the thread
        # the task was made on (the GUI thread), whatever thread emits.
        self._done.connect(self._finish_done)
        self._failed.connect(self._finish_failed)
        self._progress.connect(self._relay_progress)

    def run(self) -> None:
        """Runs on a pool thread."""
        try:
            if self.on_progress is not None:
                result = self.fn(self._emit_progress)
            else:
                result = self.fn()
        except Exception as err:
            if not isinstance(err, EngineError):
                log.debug("task %s failed", self.fn, exc_info=True)
            self._emit(self._failed, err)
            return
        self._emit(self._done, result)

    def _emit_progress(self, value: Any) -> None:
        self._emit(self._progress, value)

    @staticmethod
    def _emit(signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:
            # The app quit while this call was still out: nobody to tell.
            log.debug("result of a task dropped: its receiver is gone")

    def _owner_gone(self) -> bool:
        # A window closed and deleted while its call was out: drop the answer.
        return self.owner is not None and not shiboken6.isValid(self.owner)

    @Slot(object)
    def _finish_done(self, result: Any) -> None:
        try:
            if self.on_done is not None and not self._owner_gone():
                self.on_done(result)
        finally:
            self._end()

    @Slot(object)
    def _finish_failed(self, err: Exception) -> None:
        try:
            if self._owner_gone():
                pass
            elif self.on_failed is not None:
                self.on_failed(err)
            else:
                log.warning("background task failed: %s", err)
        finally:
            self._end()

    @Slot(object)
    def _relay_progress(self, value: Any) -> None:
        if self.on_progress is not None and not self._owner_gone():
            self.on_progress(value)

    def _end(self) -> None:
        self.finished.emit()
        _pending.discard(self)


class _Runner(QRunnable):
    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def run(self) -> None:
        self.task.run()


def pool() -> QThreadPool:
    instance = QThreadPool.globalInstance()
    # Engine calls mostly wait on a socket, not the CPU: allow a few more
    # than the core count so one slow call does not hold up the tables.
    if instance.maxThreadCount() < 6:
        instance.setMaxThreadCount(6)
    return instance


def wait_for_tasks(timeout_ms: int = 3000) -> bool:
    """Before exit: let calls still out finish (they time out on their own)."""
    return QThreadPool.globalInstance().waitForDone(timeout_ms)


def submit(
    fn: Callable[..., Any],
    done: Callable[[Any], None] | None = None,
    failed: Callable[[Exception], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    owner: QObject | None = None,
) -> Task:
    """Run ``fn`` on the pool; with ``progress``, ``fn`` gets a report callable.

    The callbacks are skipped if ``owner`` (a widget) was deleted meanwhile.
    """
    task = Task(fn, done, failed, progress, owner)
    _pending.add(task)
    pool().start(_Runner(task))
    return task


class StreamThread(QThread):
    """A thread that holds one engine stream until ``stop()``."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._stream: Stream | None = None
        self._stopping = threading.Event()

    def _hold(self, stream: Stream) -> bool:
        """Remember the open stream; False if stop() came first (then closed)."""
        with self._lock:
            if self._stopping.is_set():
                _close_quietly(stream)
                return False
            self._stream = stream
            return True

    def _release(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_quietly(stream)

    def stop(self) -> None:
        """End the stream and wait for the thread (GUI thread)."""
        self._stopping.set()
        self._release()
        self.wait()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


class EventsWatcher(StreamThread):
    """Holds ``GET /events`` and emits each event as a dict."""

    received = Signal(object)
    connected = Signal()
    disconnected = Signal(str)

    def __init__(self, client: EngineClient, parent: QObject | None = None) -> None:
        super().__init__(parent)
        # A session of its own: the stream holds a connection for as long as
        # it lives, and requests' sessions are not meant to be shared
        # between threads.
        self.client = EngineClient(client.host)
        self.setObjectName("events")

    def run(self) -> None:
        delay = RETRY_FIRST
        while not self.stopping:
            reason = "the event stream ended"
            try:
                stream = self.client.events()
                if not self._hold(stream):
                    return
                log.debug("events stream open on %s", self.client.host)
                self.connected.emit()
                delay = RETRY_FIRST
                for event in stream:
                    if self.stopping:
                        return
                    if isinstance(event, dict):
                        self.received.emit(event)
            except EngineError as err:
                reason = str(err)
            except Exception as err:
                reason = f"event stream failed: {err}"
                log.debug("events stream failed", exc_info=True)
            finally:
                self._release()
            if self.stopping:
                return
            log.info("engine events lost (%s); retrying in %.0f s", reason, delay)
            self.disconnected.emit(reason)
            # Waits on the stop flag, so stop() does not wait out the delay.
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX)


class LogFollower(StreamThread):
    """Follows one container's log; emits text as it arrives."""

    text = Signal(str)
    ended = Signal(str)

    def __init__(
        self, client: EngineClient, container: str, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        # See EventsWatcher; and no read timeout, which docker-py would apply
        # to a followed log that stays quiet for a while.
        self.client = EngineClient(client.host, streams_only=True)
        self.container = container
        self.setObjectName(f"logs-{container[:12]}")

    def run(self) -> None:
        reason = "end of log"
        try:
            stream = self.client.logs(self.container)
            if not self._hold(stream):
                return
            for chunk in stream:
                if self.stopping:
                    return
                if isinstance(chunk, bytes):
                    chunk = chunk.decode(errors="replace")
                self.text.emit(chunk)
        except EngineError as err:
            reason = str(err)
        except Exception as err:
            reason = f"log stream failed: {err}"
            log.debug("log stream failed", exc_info=True)
        finally:
            self._release()
        if not self.stopping:
            self.ended.emit(reason)


def _close_quietly(stream: Stream) -> None:
    try:
        stream.close()
    except Exception:
        log.debug("closing a stream failed", exc_info=True)
