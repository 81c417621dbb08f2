"""Attach: clients that read a container's output and write its stdin.

conmon owns the container's stdio and offers it on an attach socket. The
engine keeps one connection to that socket per container run and fans the
output out to every attached client, so::

    docker run busybox echo hi      # create -> attach -> wait -> start

sees every byte: the attach request registers its session before the
``101`` goes out, and the ContainerManager calls :meth:`container_created`
(which connects to conmon) before it asks the runtime to start the process.
A session opened while the container is stopped waits for its next run,
which is what ``docker start -a`` needs.

Stdin follows dockerd: the keystrokes of a TTY session are scanned for the
detach keys; when the client's stdin ends (it half-closes the connection)
a ``StdinOnce`` container without a TTY gets its stdin closed and the
session keeps streaming output until the process exits, otherwise the
session ends there.

conmon flags this relies on (the lifecycle owner passes them): ``-i`` when
``OpenStdin``; ``--leave-stdin-open`` only when ``OpenStdin`` and not
``StdinOnce``, so that our half-close reaches the process exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.containers.streams import (
    CONMON_STDERR,
    STDERR,
    STDOUT,
    ConmonSocket,
    DetachScanner,
    encode,
    write_resize,
)
from engine.errors import Conflict

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

# How long a finished container's output may still be in flight from conmon.
DRAIN_TIMEOUT = 5.0
# Messages (up to 8 KiB each from conmon) one attached client may lag behind.
SESSION_BACKLOG = 1024


# -- what this module reads from a Container (see docs/DESIGN.md) --


def config_of(c: Any) -> dict[str, Any]:
    return getattr(c, "config", None) or {}


def host_config_of(c: Any) -> dict[str, Any]:
    return getattr(c, "host_config", None) or {}


def state_of(c: Any) -> dict[str, Any]:
    state = getattr(c, "state", None)
    if isinstance(state, dict):
        return state
    return {}


def is_running(c: Any) -> bool:
    state = getattr(c, "state", None)
    if isinstance(state, dict):
        return bool(state.get("Running"))
    return bool(getattr(state, "running", False))


def is_tty(c: Any) -> bool:
    return bool(config_of(c).get("Tty"))


def pid_of(c: Any) -> int:
    state = getattr(c, "state", None)
    if isinstance(state, dict):
        return int(state.get("Pid") or 0)
    return int(getattr(state, "pid", 0) or 0)


def path_attr(c: Any, name: str, fallback: str | None = None) -> Path | None:
    """A path attribute of the container, or ``bundle/<fallback>``."""
    value = getattr(c, name, None)
    if value:
        return Path(value)
    bundle = getattr(c, "bundle", None) or getattr(c, "dir", None)
    if fallback and bundle:
        return Path(bundle) / fallback
    return None


class StdinSink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


OutputSource = Callable[[], Awaitable[tuple[int, bytes] | None]]


async def bridge(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    next_output: OutputSource,
    stdin: StdinSink | None,
    tty: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: bytes,
    close_stdin_on_eof: bool,
) -> str:
    """Copy output to a hijacked client and its keystrokes to stdin.

    Returns why it ended: ``"exited"`` (output done), ``"detached"``,
    ``"stdin-closed"`` (the client's stdin ended a session that does not
    outlive it) or ``"gone"`` (the client disconnected).
    """

    async def copy_output() -> str:
        try:
            while True:
                item = await next_output()
                if item is None:
                    return "exited"
                pipe, data = item
                if pipe == CONMON_STDERR and not tty:
                    if not stderr:
                        continue
                    writer.write(encode(STDERR, data, tty))
                else:
                    if not stdout:
                        continue
                    writer.write(encode(STDOUT, data, tty))
                await writer.drain()
        except (ConnectionError, RuntimeError):
            return "gone"

    async def copy_input() -> str:
        assert stdin is not None
        scanner = DetachScanner(detach_keys) if tty else None
        while True:
            try:
                data = await reader.read(64 * 1024)
            except (ConnectionError, OSError):
                return "gone"
            if not data:
                break
            if scanner is not None:
                data, detached = scanner.feed(data)
                if data:
                    await stdin.write(data)
                if detached:
                    return "detached"
            else:
                await stdin.write(data)
        if close_stdin_on_eof:
            await stdin.close()
            # Output keeps flowing until the process is done with it.
            await asyncio.Event().wait()
        return "stdin-closed"

    output = asyncio.ensure_future(copy_output())
    tasks = {output}
    if stdin is not None:
        tasks.add(asyncio.ensure_future(copy_input()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if output in done:
            return output.result()
        return next(iter(done)).result()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


class _Session:
    """One attached client of a container: the output it has yet to get.

    The queue is bounded: a client that reads slowly holds conmon back,
    and so the container's writes, as with dockerd, instead of growing the
    engine's memory without limit.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(
            SESSION_BACKLOG
        )
        self.ended = False

    async def put(self, item: tuple[int, bytes]) -> None:
        if not self.ended:
            await self.queue.put(item)

    def end(self) -> None:
        self.ended = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    async def next(self) -> tuple[int, bytes] | None:
        if self.ended and self.queue.empty():
            return None
        return await self.queue.get()

    def discard(self) -> None:
        """The client is gone: unblock a pump waiting for room."""
        self.ended = True
        while not self.queue.empty():
            self.queue.get_nowait()


class _Hub:
    """The engine's side of one container's stdio, across runs."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.conn: ConmonSocket | None = None
        self.connected = asyncio.Event()
        self.sessions: set[_Session] = set()
        self.pump: asyncio.Task[None] | None = None

    def join(self) -> _Session:
        session = _Session()
        self.sessions.add(session)
        return session

    def leave(self, session: _Session) -> None:
        self.sessions.discard(session)
        session.discard()

    async def connect(self, path: Path) -> None:
        await self.disconnect()
        conn = None
        # conmon creates the socket before it reports the container created;
        # a short retry covers a socket still being bound after adoption.
        for _ in range(20):
            try:
                conn = await ConmonSocket.connect(path)
                break
            except FileNotFoundError:
                await asyncio.sleep(0.05)
        if conn is None:
            conn = await ConmonSocket.connect(path)
        self.conn = conn
        self.connected.set()
        self.pump = asyncio.ensure_future(self._pump(conn))

    async def _pump(self, conn: ConmonSocket) -> None:
        try:
            while True:
                item = await conn.recv()
                if item is None:
                    # Sessions of this run have their end; later ones wait
                    # for the next run.
                    self.end_sessions()
                    break
                for session in list(self.sessions):
                    await session.put(item)
        finally:
            conn.close()
            if self.conn is conn:
                self.conn = None
                self.connected.clear()

    async def wait_drained(self, timeout: float) -> None:
        pump = self.pump
        if pump is None:
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(pump), timeout)

    async def disconnect(self) -> None:
        pump, self.pump = self.pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.connected.clear()

    def end_sessions(self) -> None:
        for session in list(self.sessions):
            session.end()
        self.sessions.clear()


class _HubStdin:
    """Stdin of a container's current (or next) run, for one session."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub

    async def _conn(self) -> ConmonSocket | None:
        # Bytes typed before /start wait here for the process to exist.
        await self.hub.connected.wait()
        return self.hub.conn

    async def write(self, data: bytes) -> None:
        conn = await self._conn()
        if conn is not None:
            await conn.send(data)

    async def close(self) -> None:
        conn = await self._conn()
        if conn is not None:
            conn.close_stdin()


class AttachManager:
    """Attach sessions and TTY resizes of containers (``daemon.containers.attach``)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._hubs: dict[str, _Hub] = {}

    def _hub(self, c: Any) -> _Hub:
        hub = self._hubs.get(c.id)
        if hub is None:
            hub = self._hubs[c.id] = _Hub(c.id)
        return hub

    # -- hooks the ContainerManager calls --

    async def container_created(self, c: Any) -> None:
        """conmon runs and the runtime created the process; it has not started.

        Connects to conmon's attach socket so that no output is lost, and
        gives a TTY the size the client asked for at create.
        """
        socket_path = path_attr(c, "attach_socket", "attach")
        if socket_path is None:
            log.warning("container %s has no attach socket", c.id[:12])
            return
        try:
            await self._hub(c).connect(socket_path)
        except OSError as err:
            log.warning("cannot attach to %s's conmon: %s", c.id[:12], err)
        size = host_config_of(c).get("ConsoleSize") or [0, 0]
        if is_tty(c) and len(size) == 2 and size[0] and size[1]:
            with contextlib.suppress(OSError, ValueError):
                self._resize_conmon(c, int(size[0]), int(size[1]))

    async def container_exited(self, c: Any) -> None:
        """The process exited: let attached clients get the rest and end."""
        hub = self._hubs.get(c.id)
        if hub is None:
            return
        await hub.wait_drained(DRAIN_TIMEOUT)
        await hub.disconnect()
        hub.end_sessions()
        # A later session (docker start -a) makes a fresh hub.
        if self._hubs.get(c.id) is hub:
            del self._hubs[c.id]

    def container_removed(self, c: Any) -> None:
        hub = self._hubs.pop(c.id, None)
        if hub is not None:
            hub.end_sessions()

    async def close(self) -> None:
        """Engine shutdown: drop the connections; conmon and the process stay."""
        for hub in self._hubs.values():
            await hub.disconnect()
            hub.end_sessions()
        self._hubs.clear()

    # -- sessions --

    async def open_session(
        self,
        c: Any,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        detach_keys: bytes,
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[str]]:
        """Register a session now; return the coroutine that serves it.

        Output produced after this call reaches the client, even if the
        hijacked connection is only served later.
        """
        hub = self._hub(c)
        if is_running(c) and hub.conn is None:
            # A container adopted after an engine restart: connect lazily.
            socket_path = path_attr(c, "attach_socket", "attach")
            if socket_path is not None:
                with contextlib.suppress(OSError):
                    await hub.connect(socket_path)
        session = hub.join()
        config = config_of(c)
        tty = bool(config.get("Tty"))
        stdin_once = bool(config.get("StdinOnce"))
        use_stdin = stdin and bool(config.get("OpenStdin"))

        async def serve(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> str:
            sink = _HubStdin(hub) if use_stdin else None
            try:
                why = await bridge(
                    reader,
                    writer,
                    next_output=session.next,
                    stdin=sink,
                    tty=tty,
                    stdout=stdout,
                    stderr=stderr,
                    detach_keys=detach_keys,
                    close_stdin_on_eof=stdin_once and not tty,
                )
            finally:
                hub.leave(session)
            if why == "gone" and sink is not None and stdin_once:
                # dockerd closes a StdinOnce stdin when its client vanishes.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sink.close(), 1)
            log.debug("attach session of %s ended: %s", c.id[:12], why)
            return why

        return serve

    # -- TTY size --

    def resize(self, c: Any, height: int, width: int) -> None:
        """Resize the container's TTY; Conflict if it is not running."""
        if not is_running(c):
            raise Conflict(f"Container {c.id} is not running")
        if not is_tty(c):
            return
        try:
            self._resize_conmon(c, height, width)
        except OSError as err:
            raise Conflict(f"Container {c.id} is not running") from err

    def _resize_conmon(self, c: Any, height: int, width: int) -> None:
        ctl = path_attr(c, "ctl_path", "ctl")
        if ctl is None:
            return
        write_resize(ctl, height, width)
