"""Container logs, read back from conmon's k8s-file log.

conmon writes every chunk of output as one line, with a timestamp, the
stream and a tag: ``F`` for a chunk that ended a line (its newline is
dropped), ``P`` for a partial chunk the next line continues::

    2026-12-03T19:03:56.968859745+00:00 stdout P 50% do
    2026-12-03T19:03:56.968906147+00:00 stdout F ne
    2026-12-03T19:03:57.170206325+00:00 stderr F oops

reads back as two messages, ``"50% done\\n"`` on stdout (stamped with the
first part's time) and ``"oops\\n"`` on stderr. ``GET /containers/{id}/logs``
serves them, multiplexed unless the container has a TTY; ``follow`` tails the
file through inotify until the container stops.
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import contextlib
import ctypes
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.containers.attach import is_running, is_tty, path_attr
from engine.containers.streams import STDERR, STDOUT, encode
from engine.errors import InvalidParameter

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# Without inotify (or when the log is replaced) the follower re-reads this often.
POLL_INTERVAL = 0.25


@dataclass
class LogMessage:
    time_ns: int
    stream: int  # STDOUT or STDERR
    data: bytes


@dataclass
class LogOptions:
    stdout: bool = True
    stderr: bool = True
    follow: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    timestamps: bool = False
    tail: int | None = None  # None: all
    # ``details``: the log's extra attributes before each line. Dockyard
    # keeps none (no --log-opt labels/env), so that is dockerd's lone space.
    details: bool = False


def parse_timestamp(text: bytes) -> int:
    """``2026-12-03T19:03:56.968859745+00:00`` (or ``...Z``) in ns since the epoch.

    Raises ValueError for anything else.
    """
    stamp = text.decode("ascii")
    date_time, _, rest = stamp.partition(".")
    if not rest:
        # No fraction: the zone follows the seconds directly.
        date_time, rest = stamp[:19], "0" + stamp[19:]
    digits = ""
    for char in rest:
        if not char.isdigit():
            break
        digits += char
    zone = rest[len(digits) :]
    seconds = calendar.timegm(time.strptime(date_time, "%Y-%m-%dT%H:%M:%S"))
    if zone not in ("Z", ""):
        sign = -1 if zone[0] == "-" else 1
        hours, _, minutes = zone[1:].partition(":")
        seconds -= sign * (int(hours) * 3600 + int(minutes or 0) * 60)
    fraction = int((digits + "000000000")[:9])
    return seconds * 1_000_000_000 + fraction


def format_timestamp(time_ns: int) -> str:
    """RFC 3339 with nine fraction digits in UTC, as ``docker logs -t`` prints."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def parse_since(value: str | None, name: str) -> int | None:
    """A ``since``/``until`` argument (``1700000000.123456789``) in ns.

    Zero means unset, as in dockerd. Raises InvalidParameter otherwise.
    """
    if value is None or value == "":
        return None
    whole, _, fraction = value.partition(".")
    try:
        seconds = int(whole)
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        raise InvalidParameter(
            f"invalid value for {name}: {value!r} is not a timestamp"
        ) from None
    total = seconds * 1_000_000_000 + nanos
    return total or None


class LogParser:
    """Turns k8s-file lines into messages, joining ``P`` parts to their ``F``.

    ``resume_offset`` is where a later reader must start to see the same
    messages again: after the last whole line, or at the first ``P`` part
    still waiting for the rest of its line.
    """

    def __init__(self, offset: int = 0) -> None:
        self._partial: dict[int, tuple[int, bytearray, int]] = {}
        self._tail = b""
        self._offset = offset

    @property
    def resume_offset(self) -> int:
        if self._partial:
            return min(start for _, _, start in self._partial.values())
        return self._offset

    def feed(self, data: bytes) -> Iterator[LogMessage]:
        """Messages completed by ``data``; an unfinished last line waits."""
        data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            message = self._line(line, self._offset)
            self._offset += len(line) + 1
            if message is not None:
                yield message

    def flush(self) -> Iterator[LogMessage]:
        """At the end of the log: whatever partial output remains."""
        if self._tail:
            message = self._line(self._tail, self._offset)
            self._offset += len(self._tail)
            self._tail = b""
            if message is not None:
                yield message
        pending = sorted(self._partial.items(), key=lambda item: item[1][0])
        self._partial.clear()
        for stream, (stamp, data, _) in pending:
            yield LogMessage(stamp, stream, bytes(data))

    def _line(self, line: bytes, offset: int) -> LogMessage | None:
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            return None
        try:
            stamp = parse_timestamp(parts[0])
        except (ValueError, UnicodeDecodeError):
            log.debug("skipping malformed log line %r", line[:80])
            return None
        stream = STDERR if parts[1] == b"stderr" else STDOUT
        data = parts[3] if len(parts) > 3 else b""
        pending = self._partial.get(stream)
        if parts[2] == b"P":
            if pending is None:
                self._partial[stream] = (stamp, bytearray(data), offset)
            else:
                pending[1].extend(data)
            return None
        if pending is not None:
            del self._partial[stream]
            return LogMessage(pending[0], stream, bytes(pending[1]) + data + b"\n")
        return LogMessage(stamp, stream, data + b"\n")


def read_log(path: Path, tail: int | None = None) -> list[LogMessage]:
    """The log's messages, the last ``tail`` only if given (blocking)."""
    messages, _ = _read(path, tail, complete=True)
    return messages


def _read(path: Path, tail: int | None, complete: bool) -> tuple[list[LogMessage], int]:
    """Messages of the log file and the offset a follower continues at.

    ``complete`` also returns the trailing partial output; a follower wants
    it left for later, when the rest of its line arrives.
    """
    parser = LogParser()
    kept: collections.deque[LogMessage] | list[LogMessage]
    kept = collections.deque(maxlen=tail) if tail is not None else []
    try:
        with open(path, "rb") as f:
            while chunk := f.read(READ_SIZE):
                kept.extend(parser.feed(chunk))
    except FileNotFoundError:
        return [], 0
    if complete:
        kept.extend(parser.flush())
        if tail is not None:
            kept = list(kept)[-tail:] if tail else []
    return list(kept), parser.resume_offset


class _Inotify:
    """Wakes a coroutine when a file changes (inotify through libc)."""

    IN_MODIFY = 0x002
    IN_ATTRIB = 0x004
    IN_CLOSE_WRITE = 0x008
    IN_MOVE_SELF = 0x800
    IN_DELETE_SELF = 0x400
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self, path: Path) -> None:
        self.fd = -1
        self.changed = asyncio.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = (
            self.IN_MODIFY
            | self.IN_ATTRIB
            | self.IN_CLOSE_WRITE
            | self.IN_MOVE_SELF
            | self.IN_DELETE_SELF
        )
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, "inotify_add_watch failed", str(path))
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._ready)

    def _ready(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        self.changed.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class LogReader:
    """Serves a container's log as the Engine API wants it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def _encode(self, message: LogMessage, options: LogOptions, tty: bool) -> bytes:
        data = message.data
        if options.details:
            data = b" " + data
        if options.timestamps:
            data = format_timestamp(message.time_ns).encode() + b" " + data
        return encode(message.stream, data, tty)

    def _wanted(self, message: LogMessage, options: LogOptions) -> bool:
        if message.stream == STDOUT and not options.stdout:
            return False
        if message.stream == STDERR and not options.stderr:
            return False
        return not (options.since_ns is not None and message.time_ns < options.since_ns)

    def _past_until(self, message: LogMessage, options: LogOptions) -> bool:
        return options.until_ns is not None and message.time_ns > options.until_ns

    async def stream(self, c: Any, options: LogOptions) -> AsyncIterator[bytes]:
        """The log as API bytes; with ``follow``, until the container stops."""
        path = path_attr(c, "log_path", "ctr.log")
        tty = is_tty(c)
        follow = options.follow and is_running(c)
        if path is None:
            return
        if options.tail == 0 and not follow:
            return
        first, offset = await asyncio.to_thread(_read, path, options.tail, not follow)
        for message in first:
            if self._past_until(message, options):
                return
            if self._wanted(message, options):
                yield self._encode(message, options, tty)
        if not follow:
            return
        async for message in self._follow(c, path, offset):
            if self._past_until(message, options):
                return
            if self._wanted(message, options):
                yield self._encode(message, options, tty)

    async def _follow(
        self, c: Any, path: Path, offset: int
    ) -> AsyncIterator[LogMessage]:
        stopped = asyncio.ensure_future(self._wait_stopped(c))
        watcher: _Inotify | None = None
        parser = LogParser(offset)
        try:
            try:
                watcher = _Inotify(path)
            except OSError as err:
                log.debug("no inotify on %s (%s): polling", path, err)
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    done = stopped.done()
                    while chunk := f.read(READ_SIZE):
                        for message in parser.feed(chunk):
                            yield message
                    if done:
                        # conmon wrote everything before the container was
                        # reported stopped: what was read is the whole log.
                        for message in parser.flush():
                            yield message
                        return
                    if watcher is not None:
                        wait = asyncio.ensure_future(watcher.wait(30))
                    else:
                        wait = asyncio.ensure_future(asyncio.sleep(POLL_INTERVAL))
                    await asyncio.wait(
                        {wait, stopped}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not wait.done():
                        wait.cancel()
        except FileNotFoundError:
            return
        finally:
            stopped.cancel()
            if watcher is not None:
                watcher.close()

    async def _wait_stopped(self, c: Any) -> None:
        manager = getattr(self.daemon, "containers", None)
        wait = getattr(manager, "wait", None)
        if wait is not None:
            try:
                await wait(c, "not-running")
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("containers.wait failed (%s): polling the state", err)
        while is_running(c):
            await asyncio.sleep(0.5)
