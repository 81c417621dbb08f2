"""Blocking HTTP/1.1 transport to registries, run in worker threads.

Registries are plain HTTP(S) servers; what is particular to them is kept
here: connections pooled per host (a pull fetches three layers at a time,
each on its own connection), redirects of blob downloads to other hosts
(object storage) without our credentials, TLS with the system CAs plus the
per-registry ``certs.d/<host:port>/`` folder, and the registry's error
bodies turned into the text docker prints::

    {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    -> "manifest unknown: manifest unknown"

Every call blocks; the pull and push coroutines run them with
``asyncio.to_thread`` so the engine's event loop never waits on a socket.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from engine import __version__
from engine.errors import EngineError, NotFound

log = logging.getLogger(__name__)

USER_AGENT = f"dockyard/{__version__}"
TIMEOUT = 60.0
READ_SIZE = 1024 * 1024
MAX_REDIRECTS = 5


class RegistryError(EngineError):
    """A registry refused or failed a request; the message is docker's text."""


class RegistryUnauthorized(RegistryError):
    """Credentials missing or refused (pull and push report these as 500)."""


class RegistryNotFound(RegistryError, NotFound):
    """A manifest or blob the registry does not have."""


class Cancelled(RegistryError):
    """The client went away; workers stop at their next chunk."""


def error_text(body: bytes, status: int, reason: str) -> str:
    """The registry's error body as docker prints it: ``code words: message``."""
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    parts = []
    for err in errors:
        if not isinstance(err, dict):
            continue
        code = str(err.get("code", "")).lower().replace("_", " ")
        message = str(err.get("message", ""))
        parts.append(f"{code}: {message}" if code else message)
    if parts:
        return ", ".join(parts)
    # Token servers and proxies answer with their own shapes.
    try:
        doc = json.loads(body)
        for key in ("details", "message", "error"):
            if isinstance(doc, dict) and doc.get(key):
                return str(doc[key])
    except ValueError:
        pass
    return f"unexpected status {status} {reason}".strip()


@dataclass
class Response:
    """A response whose body is read on demand; ``close`` returns the socket."""

    status: int
    reason: str
    headers: dict[str, str]
    url: str
    _raw: http.client.HTTPResponse
    _release: Any = None
    _done: bool = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def read(self) -> bytes:
        try:
            return self._raw.read()
        finally:
            self.close()

    def readinto(self, buffer: memoryview) -> int:
        n = self._raw.readinto(buffer)
        if n == 0:
            self.close()
        return n

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._release is not None:
            self._release(reuse=self._raw.isclosed())

    def error(self, what: str = "") -> RegistryError:
        """The error to raise for this (non-2xx) response; reads the body."""
        body = self.read()
        if self.status == 401:
            # HEAD answers carry no body; the challenge may say why.
            text = error_text(body, self.status, self.reason) if body.strip() else ""
            reason = _challenge_error(self.header("www-authenticate"))
            return RegistryUnauthorized(
                text or reason or "unauthorized: authentication required"
            )
        text = error_text(body, self.status, self.reason)
        message = f"{what}: {text}" if what else text
        if self.status == 404:
            return RegistryNotFound(message)
        return RegistryError(message)


def _challenge_error(header: str) -> str:
    """``error="insufficient_scope"`` of a Bearer challenge, as words."""
    marker = 'error="'
    start = header.find(marker)
    if start < 0:
        return ""
    end = header.find('"', start + len(marker))
    code = header[start + len(marker) : end].replace("_", " ")
    return f"unauthorized: {code}" if code else ""


@dataclass
class _Pool:
    idle: list[http.client.HTTPConnection] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Transport:
    """Pooled keep-alive connections, TLS contexts per registry host."""

    def __init__(self, certs_dir: Path) -> None:
        self.certs_dir = certs_dir
        self._pools: dict[tuple[str, str, bool], _Pool] = {}
        self._contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def ssl_context(self, netloc: str, verify: bool) -> ssl.SSLContext:
        """System CAs, plus ``certs.d/<host:port>/``: *.crt CAs, client cert pairs."""
        key = (netloc, verify)
        with self._lock:
            context = self._contexts.get(key)
            if context is not None:
                return context
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        folder = self.certs_dir / netloc
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix == ".crt":
                    context.load_verify_locations(cafile=str(path))
                elif path.suffix == ".cert":
                    keyfile = path.with_suffix(".key")
                    if not keyfile.exists():
                        raise RegistryError(
                            f"missing key {keyfile.name} for client certificate {path.name}"
                        )
                    context.load_cert_chain(str(path), str(keyfile))
            log.debug("TLS for %s uses certificates from %s", netloc, folder)
        with self._lock:
            self._contexts[key] = context
        return context

    def _connect(
        self, scheme: str, netloc: str, verify: bool
    ) -> http.client.HTTPConnection:
        if scheme == "https":
            context = self.ssl_context(netloc, verify)
            return http.client.HTTPSConnection(
                netloc, timeout=TIMEOUT, context=context, blocksize=READ_SIZE
            )
        return http.client.HTTPConnection(netloc, timeout=TIMEOUT, blocksize=READ_SIZE)

    def _pool(self, key: tuple[str, str, bool]) -> _Pool:
        with self._lock:
            return self._pools.setdefault(key, _Pool())

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | IO[bytes] | Iterable[bytes] | None = None,
        verify: bool = True,
        follow: bool = True,
    ) -> Response:
        """Send one request; follows redirects (dropping credentials off-host).

        Raises OSError (and ssl.SSLError) when the host cannot be reached.
        """
        sent = dict(headers or {})
        sent.setdefault("User-Agent", USER_AGENT)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, sent, body, verify)
            if not follow or response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.header("location")
            response.read()
            if not location:
                return response
            target = urljoin(url, location)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                sent.pop("Authorization", None)
            log.debug("redirected to %s", target.split("?")[0])
            url = target
            if response.status == 303:
                method, body = "GET", None
        raise RegistryError(f"too many redirects fetching {url}")

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | IO[bytes] | Iterable[bytes] | None,
        verify: bool,
    ) -> Response:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, verify)
        pool = self._pool(key)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        # A pooled connection may have been closed by the server while idle:
        # retry once on a fresh one, unless the body was a one-shot stream.
        replayable = body is None or isinstance(body, bytes)
        for attempt in (0, 1):
            # A streamed body goes on a fresh connection: a pooled one the
            # server closed meanwhile would fail after the stream was read.
            with pool.lock:
                conn = pool.idle.pop() if pool.idle and replayable else None
            fresh = conn is None
            if conn is None:
                conn = self._connect(parts.scheme, parts.netloc, verify)
            try:
                chunked = (
                    body is not None
                    and not isinstance(body, bytes)
                    and ("Content-Length" not in headers)
                )
                conn.request(
                    method, path, body=body, headers=headers, encode_chunked=chunked
                )
                raw = conn.getresponse()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
            ):
                conn.close()
                if fresh or attempt or not replayable:
                    raise
                continue
            except BaseException:
                conn.close()
                raise

            def release(reuse: bool, conn: http.client.HTTPConnection = conn) -> None:
                if reuse and conn.sock is not None:
                    with pool.lock:
                        pool.idle.append(conn)
                else:
                    conn.close()

            response = Response(
                status=raw.status,
                reason=raw.reason,
                headers={k.lower(): v for k, v in raw.getheaders()},
                url=url,
                _raw=raw,
            )
            response._release = lambda reuse, raw=raw: release(
                reuse and not raw.will_close
            )
            if method == "HEAD" or raw.length == 0:
                raw.read()
                response.close()
            return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            with pool.lock:
                for conn in pool.idle:
                    conn.close()
                pool.idle.clear()
