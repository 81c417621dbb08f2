"""The engine's API on a host unix socket, readable by its owner only.

The forwarder serves ``docker.sock`` in the machine's folder; the docker CLI
reaches it with ``DOCKER_HOST=unix://.../docker.sock``::

    listener = UnixListener(dirs.socket, proxy)
    threading.Thread(target=listener.serve).start()   # proxy(conn) per client
    listener.close()                                 # and the socket is gone

The socket is bound under a temporary name, given mode 0600 and renamed
into place, so no other user can connect in the moment between bind and
chmod, and a stale socket left by a killed forwarder is replaced in one
step. A regular file in the way is never deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from desktop.machine.errors import ForwardError

log = logging.getLogger(__name__)

Proxy = Callable[[socket.socket], None]


def accept_loop(server: socket.socket, closed: threading.Event, proxy: Proxy) -> None:
    """Accept on ``server`` until ``closed`` is set or it is shut; a thread each.

    The TLS listener shares this; its ``proxy`` does the handshake first.
    """
    while not closed.is_set():
        try:
            conn, _ = server.accept()
        except OSError:
            break
        threading.Thread(target=proxy, args=(conn,), daemon=True).start()


def stop_accepting(server: socket.socket, closed: threading.Event) -> bool:
    """Wake ``accept_loop`` and close ``server``; False if already closed."""
    if closed.is_set():
        return False
    closed.set()
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)
    server.close()
    return True


class UnixListener:
    """Accept on a unix socket and hand each connection to ``proxy``."""

    kind = "unix"

    def __init__(self, path: Path, proxy: Proxy, mode: int = 0o600) -> None:
        self.path = path
        self.proxy = proxy
        self.tls_dir: Path | None = None
        self._closed = threading.Event()
        self._server = self._bind(mode)
        self._inode = os.stat(path).st_ino

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _bind(self, mode: int) -> socket.socket:
        try:
            old = os.lstat(self.path)
        except FileNotFoundError:
            old = None
        if old is not None and not stat.S_ISSOCK(old.st_mode):
            raise ForwardError(
                f"{self.path} exists and is not a socket; move it away and "
                "start the machine again"
            )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(tmp))
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
            server.listen(64)
        except OSError as err:
            server.close()
            tmp.unlink(missing_ok=True)
            raise ForwardError(f"cannot serve {self.path}: {err}") from err
        if old is not None:
            log.debug("replaced the stale socket %s", self.path)
        return server

    def serve(self) -> None:
        """Accept until ``close()``; each connection runs ``proxy`` on a thread."""
        log.info("serving the engine API on %s", self.path)
        accept_loop(self._server, self._closed, self.proxy)

    def close(self) -> None:
        """Stop accepting and remove the socket if it is still this listener's."""
        if not stop_accepting(self._server, self._closed):
            return
        # A newer forwarder may already have put its own socket there.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
