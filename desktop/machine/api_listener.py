"""Where the host's docker CLI reaches a machine's engine: one listener kind.

The forwarder serves the engine's API on the host in one of three ways,
each a sibling module with the same small interface (``docker_host``,
``tls_dir``, ``serve()``, ``close()``; every accepted client is handed to
``proxy(conn)`` on its own thread, ``conn`` being a connected socket)::

    unix   machines/NAME/docker.sock, mode 0600    (Linux, macOS)
    npipe  \\\\.\\pipe\\dockyard_NAME, owner only     (Windows)
    tls    127.0.0.1:PORT with mutual TLS          (anywhere; Windows fallback)

    listener = listen(None, root=dirs.root, socket=dirs.socket, name="default",
                      proxy=forward_to_engine)
    listener.serve()

``DOCKYARD_API`` (``unix``, ``npipe`` or ``tls``) overrides the platform's
choice. The endpoint is written to ``api.json`` in the machine's folder,
for the docker context and ``machine env``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from desktop.machine.api_listener_posix import Proxy
from desktop.machine.errors import ForwardError

log = logging.getLogger(__name__)

KINDS = ("unix", "npipe", "tls")


class Listener(Protocol):
    kind: str
    tls_dir: Path | None

    @property
    def docker_host(self) -> str: ...

    def serve(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Endpoint:
    """How a client reaches the listener: ``api.json`` in the machine's folder."""

    kind: str
    host: str
    cert_path: str | None = None

    def env(self) -> dict[str, str]:
        """The docker CLI's variables for this endpoint."""
        env = {"DOCKER_HOST": self.host}
        if self.cert_path:
            env["DOCKER_TLS_VERIFY"] = "1"
            env["DOCKER_CERT_PATH"] = self.cert_path
        return env

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Endpoint | None:
        try:
            data = json.loads(path.read_text())
            return cls(data["kind"], data["host"], data.get("cert_path"))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def endpoint_of(listener: Listener) -> Endpoint:
    cert = str(listener.tls_dir) if listener.tls_dir is not None else None
    return Endpoint(listener.kind, listener.docker_host, cert)


def ping(endpoint: Endpoint, timeout: float = 2.0) -> bool:
    """True if the engine answers ``/_ping`` through ``endpoint`` (unix or tls)."""
    import socket
    import ssl

    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if endpoint.host.startswith("unix://"):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(timeout)
            conn.connect(endpoint.host.removeprefix("unix://"))
        elif endpoint.host.startswith("tcp://") and endpoint.cert_path:
            certs = Path(endpoint.cert_path)
            ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            ctx.load_cert_chain(certs / "cert.pem", certs / "key.pem")
            host, _, port = endpoint.host.removeprefix("tcp://").rpartition(":")
            raw = socket.create_connection((host, int(port)), timeout)
            conn = ctx.wrap_socket(raw, server_hostname=host)
        else:
            return False
        with conn:
            conn.sendall(request)
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except (OSError, ValueError):
        return False
    return reply.startswith(b"HTTP/1.") and reply.endswith(b"OK")


def default_kind(platform: str = sys.platform) -> str:
    """``DOCKYARD_API`` if set, else the platform's native kind."""
    forced = os.environ.get("DOCKYARD_API", "")
    if forced:
        if forced not in KINDS:
            raise ForwardError(
                f"DOCKYARD_API={forced} is not one of {', '.join(KINDS)}"
            )
        return forced
    return "npipe" if platform == "win32" else "unix"


def listen(
    kind: str | None,
    *,
    root: Path,
    socket: Path,
    name: str,
    proxy: Proxy,
    port: int = 0,
) -> Listener:
    """Start listening (not yet accepting) for machine ``name``.

    ``root`` is the machine's folder (TLS material goes in ``root/tls``),
    ``socket`` the unix socket's path, ``port`` the TLS port to try first
    (0: any). Raises ``ForwardError``.
    """
    kind = kind or default_kind()
    log.debug("API listener for %s: %s", name, kind)
    if kind == "unix":
        from desktop.machine.api_listener_posix import UnixListener

        return UnixListener(socket, proxy)
    if kind == "tls":
        from desktop.machine.api_listener_tls import TLSListener

        return TLSListener(root / "tls", name, proxy, port=port)
    if kind == "npipe":
        from desktop.machine.api_listener_windows import NamedPipeListener

        return NamedPipeListener(name, proxy)
    raise ForwardError(f"unknown API listener kind {kind!r}: use one of {KINDS}")
