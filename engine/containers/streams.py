"""Byte streams between API clients and containers.

Three wire formats meet here:

- the Engine API's multiplexed stream: without a TTY every chunk of output
  travels in a frame with an 8-byte header, ``[stream, 0, 0, 0, size (4
  bytes, big endian)]``, stream 1 for stdout and 2 for stderr::

      frame(STDOUT, b"hi\\n") == b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03hi\\n"

  with a TTY the bytes go raw, as the terminal produced them;
- conmon's attach socket (``SOCK_SEQPACKET``): each message it sends starts
  with one byte naming the pipe (2 stdout, 3 stderr), and what we send is
  written to the container's stdin; half-closing our side makes conmon close
  that stdin (unless it was started with ``--leave-stdin-open``);
- detach keys: a TTY client leaves an attach session with a key sequence
  (``ctrl-p,ctrl-q`` unless told otherwise), which must not reach the
  container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

from engine.errors import InvalidParameter

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR = 0, 1, 2
CONMON_STDOUT, CONMON_STDERR = 2, 3
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
# conmon reads stdin messages into a 32 KiB buffer, keeping one byte spare.
CONMON_MAX_MESSAGE = 32 * 1024 - 1
RECV_SIZE = 64 * 1024
_HEADER = struct.Struct(">BxxxI")


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame of ``data`` on ``stream`` (1 stdout, 2 stderr)."""
    return _HEADER.pack(stream, len(data)) + data


def encode(stream: int, data: bytes, tty: bool) -> bytes:
    """Output as the client expects it: raw with a TTY, framed without."""
    return data if tty else frame(stream, data)


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a complete multiplexed stream into ``(stream, payload)`` pairs."""
    out = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        stream, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        out.append((stream, data[offset : offset + size]))
        offset += size
    return out


def parse_detach_keys(keys: str | None) -> bytes:
    """``"ctrl-p,ctrl-q"`` as the bytes a terminal sends, ``b"\\x10\\x11"``.

    Raises InvalidParameter for a key that is neither one character nor
    ``ctrl-<a-z @ [ \\ ] ^ _>``, with dockerd's wording.
    """
    if keys is None or keys == "":
        keys = DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in keys.split(","):
        if len(key) == 1:
            out.append(ord(key))
            continue
        lowered = key.lower()
        if lowered.startswith("ctrl-") and len(lowered) == 6:
            char = lowered[5]
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
                continue
            specials = "@[\\]^_"
            if char in specials:
                out.append(specials.index(char) + (0 if char == "@" else 26))
                continue
        raise InvalidParameter(f"Invalid detach keys ({keys}) provided")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in a client's keystrokes.

    Bytes that might start the sequence are held back until the next bytes
    tell whether they do; anything else passes through unchanged.
    """

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Return ``(bytes for the container, detached?)``."""
        if not self.keys:
            return data, False
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self.keys.startswith(candidate):
                if candidate == self.keys:
                    self._held = b""
                    return bytes(out), True
                self._held = candidate
                continue
            # A broken prefix goes through; its last byte may start anew.
            self._held = b""
            out += candidate[:-1]
            if self.keys.startswith(bytes([byte])):
                self._held = bytes([byte])
            else:
                out.append(byte)
        return bytes(out), False


def _connectable(path: Path) -> tuple[str, int | None]:
    """A socket address for ``path``, even past the 107-byte limit.

    Long paths go through ``/proc/self/fd/<dir fd>/<name>``; the caller
    closes the returned directory fd once connected.
    """
    text = str(path)
    if len(text.encode()) < 100:
        return text, None
    dir_fd = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{dir_fd}/{path.name}", dir_fd


class ConmonSocket:
    """One connection to a conmon attach socket.

    ``recv()`` yields ``(pipe, data)`` with pipe :data:`CONMON_STDOUT` or
    :data:`CONMON_STDERR`, or None once conmon closed the connection (the
    process exited and all its output was delivered).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._stdin_closed = False
        self.closed = False

    @classmethod
    async def connect(cls, path: Path) -> ConmonSocket:
        """Connect to the attach socket at ``path``; OSError if it is gone."""
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC
        )
        sock.setblocking(False)
        address, dir_fd = _connectable(path)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except OSError:
            sock.close()
            raise
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        return cls(sock)

    async def recv(self) -> tuple[int, bytes] | None:
        if self.closed:
            return None
        try:
            message = await self._loop.sock_recv(self._sock, RECV_SIZE)
        except (ConnectionError, OSError):
            return None
        if not message:
            return None
        return message[0], message[1:]

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the container's stdin (dropped once it is closed)."""
        if self._stdin_closed or self.closed:
            return
        for start in range(0, len(data), CONMON_MAX_MESSAGE):
            chunk = data[start : start + CONMON_MAX_MESSAGE]
            try:
                await self._loop.sock_sendall(self._sock, chunk)
            except OSError as err:
                log.debug("stdin write to conmon failed: %s", err)
                self._stdin_closed = True
                return

    def close_stdin(self) -> None:
        """Half-close: conmon then closes the container's stdin."""
        if self._stdin_closed or self.closed:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()


def write_resize(ctl_path: Path | str, height: int, width: int) -> None:
    """Ask conmon to resize the TTY it holds, through its ``ctl`` fifo.

    Raises OSError (ENXIO) when no conmon reads the fifo any more.
    """
    fd = os.open(ctl_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, f"1 {height} {width}\n".encode())
    finally:
        os.close(fd)


async def client_gone(reader: asyncio.StreamReader) -> None:
    """Return when the client of a streaming response hangs up.

    A streaming answer is the last one on its connection, so whatever the
    client sends after its request is read and dropped here.
    """
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass


async def race_disconnect(
    body: AsyncIterator[bytes], reader: asyncio.StreamReader
) -> AsyncIterator[bytes]:
    """Stream ``body`` until it ends or the client disconnects.

    Without this a follower of a quiet container would only notice a closed
    connection at its next write, which may never come.
    """
    gone = asyncio.ensure_future(client_gone(reader))
    iterator = body.__aiter__()
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        gone.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
