"""The engine's API on a Windows named pipe, for the owner only.

Docker on Windows talks to ``npipe:////./pipe/docker_engine``; a Dockyard
machine serves its own pipe, ``\\\\.\\pipe\\dockyard_NAME``::

    DOCKER_HOST=npipe:////./pipe/dockyard_default docker ps

Choices, each the one dockerd and the CLI's pipe library (go-winio) expect:

- message mode: the CLI half-closes a pipe (the end of ``docker run -i``'s
  stdin, a hijacked attach) by writing a zero-length message, and reads one
  as the end of the stream. Byte mode has no way to say that.
- a protected DACL for SYSTEM and the user running Dockyard only (Windows'
  default DACL lets Everyone read), and remote clients rejected.
- the first instance is created with FILE_FLAG_FIRST_PIPE_INSTANCE, and a
  waiting instance exists from then on: another program that already holds
  the name makes the listener fail instead of being served to clients.
- overlapped handles: the relay reads and writes one pipe from two threads,
  and synchronous I/O on one handle would run one at a time.

Each client's pipe is relayed to one end of a socket pair and the proxy
gets the other end, the same kind of connection the unix listener gives.

This module cannot run here (Linux): the Win32 calls live in ``Win32Pipes``
and everything above them (names, the DACL, instance handling, the relay
and its half-closes) is tested with a fake in its place.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from desktop.machine.api_listener_posix import Proxy
from desktop.machine.errors import ForwardError

log = logging.getLogger(__name__)

CHUNK = 64 * 1024

# Win32 constants (winbase.h, winerror.h).
PIPE_ACCESS_DUPLEX = 0x00000003
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
FILE_FLAG_OVERLAPPED = 0x40000000
PIPE_TYPE_MESSAGE = 0x00000004
PIPE_READMODE_MESSAGE = 0x00000002
PIPE_WAIT = 0x00000000
PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
PIPE_UNLIMITED_INSTANCES = 255
BUFFER_SIZE = 65536
ERROR_ACCESS_DENIED = 5
ERROR_BROKEN_PIPE = 109
ERROR_MORE_DATA = 234
ERROR_PIPE_NOT_CONNECTED = 233
ERROR_PIPE_CONNECTED = 535
ERROR_OPERATION_ABORTED = 995
ERROR_IO_PENDING = 997


def pipe_name(machine: str) -> str:
    r"""``\\.\pipe\dockyard_<machine>``."""
    return f"\\\\.\\pipe\\dockyard_{machine}"


def docker_host(machine: str) -> str:
    """The same pipe as the docker CLI writes it."""
    return f"npipe:////./pipe/dockyard_{machine}"


def security_descriptor(user_sid: str) -> str:
    """SDDL of the pipe: full access for SYSTEM and ``user_sid``, no one else.

    ``P`` protects the DACL from inherited entries.
    """
    return f"D:P(A;;GA;;;SY)(A;;GA;;;{user_sid})"


def open_mode(first: bool) -> int:
    mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED
    return mode | FILE_FLAG_FIRST_PIPE_INSTANCE if first else mode


PIPE_MODE = PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT
PIPE_MODE |= PIPE_REJECT_REMOTE_CLIENTS


class PipeIO(Protocol):
    """The Win32 calls the listener makes (``Win32Pipes``, or a test's fake)."""

    def user_sid(self) -> str: ...

    def create(self, name: str, open_mode: int, pipe_mode: int, sddl: str) -> int:
        """A new pipe instance; ``OSError`` (winerror set) on failure."""
        ...

    def connect(self, handle: int) -> None:
        """Wait for a client; ``OSError`` when ``cancel`` aborted the wait."""
        ...

    def read(self, handle: int, size: int) -> bytes:
        """Up to ``size`` bytes; b"" for a zero-length message or a gone client."""
        ...

    def write(self, handle: int, data: bytes) -> None: ...

    def cancel(self, handle: int) -> None: ...

    def close(self, handle: int, flush: bool) -> None:
        """Close the instance; ``flush`` first waits until the client read all."""
        ...


class NamedPipeListener:
    """Accept on ``\\\\.\\pipe\\dockyard_<machine>``; ``proxy`` gets a socket."""

    kind = "npipe"

    def __init__(self, machine: str, proxy: Proxy, io: PipeIO | None = None) -> None:
        self.machine = machine
        self.proxy = proxy
        self.tls_dir: Path | None = None
        self.io: PipeIO = io if io is not None else Win32Pipes()
        self.name = pipe_name(machine)
        self.sddl = security_descriptor(self.io.user_sid())
        self._closed = threading.Event()
        self._lock = threading.Lock()
        # Created now, so a name someone else holds fails the start.
        self._waiting: int | None = self._create(first=True)

    @property
    def docker_host(self) -> str:
        return docker_host(self.machine)

    def _create(self, first: bool) -> int:
        try:
            return self.io.create(self.name, open_mode(first), PIPE_MODE, self.sddl)
        except OSError as err:
            if getattr(err, "winerror", None) == ERROR_ACCESS_DENIED and first:
                raise ForwardError(
                    f"another program already serves {self.name}: stop it, or "
                    "the other Dockyard using the same machine name"
                ) from err
            raise ForwardError(f"cannot create {self.name}: {err}") from err

    def serve(self) -> None:
        """Accept until ``close()``; each client is relayed on its own threads."""
        log.info("serving the engine API on %s", self.name)
        while not self._closed.is_set():
            with self._lock:
                handle = self._waiting
            if handle is None:
                break
            try:
                self.io.connect(handle)
            except OSError as err:
                if not self._closed.is_set():
                    log.warning("waiting for a client on %s failed: %s", self.name, err)
                with self._lock:
                    self._waiting = None
                self.io.close(handle, flush=False)
                break
            # The next instance before the handoff: the name must never
            # vanish while Dockyard serves it, or another program could take it.
            with self._lock:
                self._waiting = None if self._closed.is_set() else self._create(False)
            threading.Thread(target=self._client, args=(handle,), daemon=True).start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            handle, self._waiting = self._waiting, None
        if handle is not None:
            self.io.cancel(handle)

    def _client(self, handle: int) -> None:
        inner, outer = socket.socketpair()
        threading.Thread(target=self.proxy, args=(outer,), daemon=True).start()
        relay(self.io, handle, inner)


def relay(io: PipeIO, handle: int, sock: socket.socket) -> None:
    """Move bytes between a connected pipe instance and ``sock`` until both end.

    A zero-length message from the client shuts the socket's write side; the
    socket's end of stream goes to the client as a zero-length message.
    """

    def pipe_to_socket() -> None:
        try:
            while data := io.read(handle, CHUNK):
                sock.sendall(data)
        except OSError as err:
            log.debug("pipe read: %s", err)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    reader = threading.Thread(target=pipe_to_socket, daemon=True)
    reader.start()
    flush = True
    try:
        while data := sock.recv(CHUNK):
            io.write(handle, data)
        io.write(handle, b"")
    except OSError as err:
        log.debug("pipe write: %s", err)
        flush = False
    reader.join()
    sock.close()
    io.close(handle, flush=flush)


class Win32Pipes:
    """``PipeIO`` with kernel32/advapi32 through ctypes (Windows only)."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise ForwardError("named pipes exist only on Windows: use unix or tls")
        import ctypes
        from ctypes import wintypes

        self.ctypes: Any = ctypes
        self.wintypes: Any = wintypes
        self.k32: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self.adv: Any = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
        self.k32.CreateNamedPipeW.restype = wintypes.HANDLE
        self.k32.CreateEventW.restype = wintypes.HANDLE
        # A pseudo-handle (-1): as a C int it would lose its upper bits on x64.
        self.k32.GetCurrentProcess.restype = wintypes.HANDLE

        class Overlapped(ctypes.Structure):
            _fields_ = [
                ("Internal", ctypes.c_size_t),
                ("InternalHigh", ctypes.c_size_t),
                ("Offset", wintypes.DWORD),
                ("OffsetHigh", wintypes.DWORD),
                ("hEvent", wintypes.HANDLE),
            ]

        class SecurityAttributes(ctypes.Structure):
            _fields_ = [
                ("nLength", wintypes.DWORD),
                ("lpSecurityDescriptor", wintypes.LPVOID),
                ("bInheritHandle", wintypes.BOOL),
            ]

        self.Overlapped: Any = Overlapped
        self.SecurityAttributes: Any = SecurityAttributes

    def _error(self, what: str) -> OSError:
        code = self.ctypes.get_last_error()
        return self.ctypes.WinError(code, f"{what}: {self.ctypes.FormatError(code)}")  # type: ignore[no-any-return]

    def user_sid(self) -> str:
        ctypes, wt = self.ctypes, self.wintypes
        token = wt.HANDLE()
        process = wt.HANDLE(self.k32.GetCurrentProcess())
        if not self.adv.OpenProcessToken(process, 0x0008, ctypes.byref(token)):
            raise self._error("OpenProcessToken")
        try:
            size = wt.DWORD()
            self.adv.GetTokenInformation(token, 1, None, 0, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            if not self.adv.GetTokenInformation(
                token, 1, buf, size, ctypes.byref(size)
            ):
                raise self._error("GetTokenInformation")
            # TOKEN_USER starts with SID_AND_ATTRIBUTES, whose first field is the SID.
            sid = ctypes.cast(buf, ctypes.POINTER(ctypes.c_void_p))[0]
            text = wt.LPWSTR()
            if not self.adv.ConvertSidToStringSidW(
                ctypes.c_void_p(sid), ctypes.byref(text)
            ):
                raise self._error("ConvertSidToStringSidW")
            value = str(text.value)
            self.k32.LocalFree(text)
            return value
        finally:
            self.k32.CloseHandle(token)

    def create(self, name: str, open_mode: int, pipe_mode: int, sddl: str) -> int:
        ctypes = self.ctypes
        descriptor = ctypes.c_void_p()
        if not self.adv.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl, 1, ctypes.byref(descriptor), None
        ):
            raise self._error("ConvertStringSecurityDescriptorToSecurityDescriptorW")
        try:
            attrs = self.SecurityAttributes(
                ctypes.sizeof(self.SecurityAttributes), descriptor, False
            )
            handle = self.k32.CreateNamedPipeW(
                name,
                open_mode,
                pipe_mode,
                PIPE_UNLIMITED_INSTANCES,
                BUFFER_SIZE,
                BUFFER_SIZE,
                0,
                ctypes.byref(attrs),
            )
        finally:
            self.k32.LocalFree(descriptor)
        if handle in (None, -1, ctypes.c_void_p(-1).value):
            raise self._error(f"CreateNamedPipe {name}")
        return int(handle)

    def _wait(self, handle: int, start: Any, what: str) -> int:
        """Run an overlapped call ``start(overlapped)``; bytes transferred."""
        ctypes, wt = self.ctypes, self.wintypes
        ov = self.Overlapped()
        ov.hEvent = self.k32.CreateEventW(None, True, False, None)
        try:
            done = wt.DWORD()
            if not start(ctypes.byref(ov)):
                code = ctypes.get_last_error()
                if code == ERROR_PIPE_CONNECTED:
                    return 0
                if code not in (ERROR_IO_PENDING, ERROR_MORE_DATA):
                    raise ctypes.WinError(code, what)
            if not self.k32.GetOverlappedResult(
                wt.HANDLE(handle), ctypes.byref(ov), ctypes.byref(done), True
            ):
                code = ctypes.get_last_error()
                # A message longer than the buffer: the rest comes next read.
                if code != ERROR_MORE_DATA:
                    raise ctypes.WinError(code, what)
            return int(done.value)
        finally:
            self.k32.CloseHandle(wt.HANDLE(ov.hEvent))

    def connect(self, handle: int) -> None:
        self._wait(
            handle,
            lambda ov: self.k32.ConnectNamedPipe(self.wintypes.HANDLE(handle), ov),
            "ConnectNamedPipe",
        )

    def read(self, handle: int, size: int) -> bytes:
        buf = self.ctypes.create_string_buffer(size)
        try:
            count = self._wait(
                handle,
                lambda ov: self.k32.ReadFile(
                    self.wintypes.HANDLE(handle), buf, size, None, ov
                ),
                "ReadFile",
            )
        except OSError as err:
            if getattr(err, "winerror", None) in (
                ERROR_BROKEN_PIPE,
                ERROR_PIPE_NOT_CONNECTED,
            ):
                return b""
            raise
        return bytes(buf.raw[:count])

    def write(self, handle: int, data: bytes) -> None:
        view = memoryview(data)
        while True:
            chunk = bytes(view[:BUFFER_SIZE])
            self._wait(
                handle,
                lambda ov, c=chunk: self.k32.WriteFile(
                    self.wintypes.HANDLE(handle), c, len(c), None, ov
                ),
                "WriteFile",
            )
            view = view[BUFFER_SIZE:]
            if not view:
                return

    def cancel(self, handle: int) -> None:
        self.k32.CancelIoEx(self.wintypes.HANDLE(handle), None)

    def close(self, handle: int, flush: bool) -> None:
        h = self.wintypes.HANDLE(handle)
        if flush:
            self.k32.FlushFileBuffers(h)
        self.k32.DisconnectNamedPipe(h)
        self.k32.CloseHandle(h)
