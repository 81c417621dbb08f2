"""Userland port proxies: a published port forwarded to a container.

Like docker-proxy, but inside the engine's event loop: each published port
is a listening socket on the host; each accepted TCP connection is paired
with a connection to the container's address and bytes are moved between
the two with ``splice(2)`` through a pipe, so they never enter Python (no
copies, no per-chunk objects). UDP keeps one connected socket towards the
container per client address, dropped after a quiet minute and a half::

    proxy = TcpProxy(listening_socket, ("172.30.0.2", 80))
    proxy.start()          # accepts on the running loop
    proxy.close()

Binding happens in :func:`bind` before anything starts, so a port that is
taken fails the container's start with the port named.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20
BURST = 16
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
UDP_IDLE_SECONDS = 90.0
UDP_MAX_DATAGRAM = 65535


class PortInUse(OSError):
    pass


def bind(proto: str, host_ip: str, port: int) -> socket.socket:
    """A socket bound (and listening, for TCP) on ``host_ip:port``.

    Raises PortInUse when the address is taken, OSError otherwise.
    """
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(err.errno, "port is already allocated") from err
        raise
    return sock


class _Direction:
    """One way of a TCP relay: ``src`` -> pipe -> ``dst``, without copies."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        done: Callable[[], None],
        fail: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.src = src
        self.dst = dst
        self.done = done
        self.fail = fail
        self.rpipe, self.wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.wpipe, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0
        self.eof = False
        self.finished = False

    def start(self) -> None:
        self.loop.add_reader(self.src.fileno(), self._readable)

    def _readable(self) -> None:
        # Keep moving while the source has data: one trip through the
        # selector per burst, not per pipe-full.
        for _ in range(BURST):
            try:
                moved = os.splice(
                    self.src.fileno(), self.wpipe, PIPE_SIZE, flags=SPLICE_FLAGS
                )
            except BlockingIOError:
                return
            except OSError:
                self.fail()
                return
            if moved == 0:
                self.eof = True
                self.loop.remove_reader(self.src.fileno())
                self._flush()
                return
            self.pending += moved
            if not self._flush():
                return

    def _flush(self) -> bool:
        """Empty the pipe into ``dst``; False when ``dst`` is full or gone."""
        while self.pending:
            try:
                moved = os.splice(
                    self.rpipe, self.dst.fileno(), self.pending, flags=SPLICE_FLAGS
                )
            except BlockingIOError:
                # The receiver is slow: stop reading until it drains.
                self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self._writable)
                return False
            except OSError:
                self.fail()
                return False
            self.pending -= moved
        if self.eof:
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
            self.finished = True
            self.done()
            return False
        return True

    def _writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self._flush()
        if not self.pending and not self.eof and not self.finished:
            self.loop.add_reader(self.src.fileno(), self._readable)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.src.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.dst.fileno())
        for fd in (self.rpipe, self.wpipe):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Relay:
    """One proxied TCP connection: two directions, closed together."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: socket.socket,
        backend: socket.socket,
        on_close: Callable[[_Relay], None],
    ) -> None:
        self.client = client
        self.backend = backend
        self.on_close = on_close
        self.closed = False
        self.ways = [
            _Direction(loop, client, backend, self._one_done, self.close),
            _Direction(loop, backend, client, self._one_done, self.close),
        ]

    def start(self) -> None:
        for way in self.ways:
            way.start()

    def _one_done(self) -> None:
        if all(w.finished for w in self.ways):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for way in self.ways:
            way.stop()
        for sock in (self.client, self.backend):
            with contextlib.suppress(OSError):
                sock.close()
        self.on_close(self)


class TcpProxy:
    def __init__(self, sock: socket.socket, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target
        self.loop: asyncio.AbstractEventLoop | None = None
        self.relays: set[_Relay] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.loop is not None
        while True:
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("accept on %s failed: %s", self.sock.getsockname(), err)
                return
            client.setblocking(False)
            task = self.loop.create_task(self._connect(client))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _connect(self, client: socket.socket) -> None:
        assert self.loop is not None
        backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        backend.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(backend, self.target), 30)
        except (OSError, TimeoutError) as err:
            log.debug("proxy to %s:%d failed: %s", *self.target, err)
            backend.close()
            client.close()
            return
        for s in (client, backend):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        relay = _Relay(self.loop, client, backend, self.relays.discard)
        self.relays.add(relay)
        relay.start()

    def close(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
        for task in list(self.tasks):
            task.cancel()
        for relay in list(self.relays):
            relay.close()
        self.sock.close()


class _Backend(asyncio.DatagramProtocol):
    """The container side of one UDP client: replies go back to that client."""

    def __init__(self, proxy: UdpProxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = time.monotonic()
        with contextlib.suppress(OSError):
            self.proxy.sock.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp to %s: %s", self.proxy.target, exc)


class UdpProxy:
    def __init__(self, sock: socket.socket, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target
        self.loop: asyncio.AbstractEventLoop | None = None
        self.backends: dict[tuple[str, int], _Backend] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self.reaper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self.reaper = self.loop.call_later(UDP_IDLE_SECONDS / 3, self._reap)

    def _readable(self) -> None:
        assert self.loop is not None
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client = addr[:2]
            backend = self.backends.get(client)
            if backend is not None and backend.transport is not None:
                backend.last = time.monotonic()
                backend.transport.sendto(data)
            elif client in self.pending:
                self.pending[client].append(data)
            else:
                self.pending[client] = [data]
                self.loop.create_task(self._open(client))

    async def _open(self, client: tuple[str, int]) -> None:
        assert self.loop is not None
        try:
            _, protocol = await self.loop.create_datagram_endpoint(
                lambda: _Backend(self, client), remote_addr=self.target
            )
        except OSError as err:
            log.debug("udp proxy to %s failed: %s", self.target, err)
            self.pending.pop(client, None)
            return
        self.backends[client] = protocol
        assert protocol.transport is not None
        for data in self.pending.pop(client, []):
            protocol.transport.sendto(data)

    def _reap(self) -> None:
        assert self.loop is not None
        now = time.monotonic()
        for client, backend in list(self.backends.items()):
            if now - backend.last > UDP_IDLE_SECONDS and backend.transport is not None:
                backend.transport.close()
                del self.backends[client]
        self.reaper = self.loop.call_later(UDP_IDLE_SECONDS / 3, self._reap)

    def close(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
        if self.reaper is not None:
            self.reaper.cancel()
        for backend in self.backends.values():
            if backend.transport is not None:
                backend.transport.close()
        self.backends.clear()
        self.sock.close()


Proxy = TcpProxy | UdpProxy


def make_proxy(proto: str, sock: socket.socket, target: tuple[str, int]) -> Proxy:
    if proto == "tcp":
        return TcpProxy(sock, target)
    return UdpProxy(sock, target)
