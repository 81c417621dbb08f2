"""A small asyncio HTTP/1.1 server shaped for the Docker Engine API.

General web frameworks make three things the Docker API needs awkward, so
the engine speaks HTTP itself:

- a response whose headers leave long before its body: ``POST /wait`` must
  answer ``200`` at once, because the CLI waits for those headers before it
  calls ``/start``, and sends the JSON only when the container exits;
- connections hijacked for attach and exec: ``101 UPGRADED`` (or ``200``
  without ``Upgrade``) followed by raw, possibly multiplexed, bytes both ways,
  including the client's half-close when its stdin ends;
- chunked streams that last as long as a container (logs, events, stats).

A handler takes a :class:`Request` and returns a :class:`Response`, a
:class:`StreamResponse` or a :class:`Hijack`::

    async def ping(req: Request) -> Response:
        return Response(body=b"OK", content_type="text/plain; charset=utf-8")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import EngineError, InvalidParameter, NotFound

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
REASONS = {
    101: "UPGRADED",
    200: "OK",
    201: "Created",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
TRUE_WORDS = {"1", "true", "True", "TRUE", "yes"}


class ClientGone(Exception):
    """The client closed its connection while we were answering."""


@dataclass
class Request:
    """One parsed request; the body is read on demand from ``reader``."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    api_version: str = ""
    params: dict[str, str] = field(default_factory=dict)
    app: Any = None
    _body: bytes | None = None
    _body_consumed: bool = False
    # The last byte of the body was read (a handler may stop half-way).
    _body_done: bool = False

    # -- query helpers, parsed the way dockerd parses them --

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None:
            return default
        return value in TRUE_WORDS

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidParameter(
                f"invalid value for {name}: {value!r} is not an integer"
            ) from None

    def json_arg(self, name: str, default: Any = None) -> Any:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return json.loads(value)
        except ValueError as err:
            raise InvalidParameter(f"invalid JSON in {name}: {err}") from None

    def filters(self) -> dict[str, list[str]]:
        """The ``filters`` argument, as ``{"name": ["a", "b"]}``.

        Old clients send ``{"name": {"a": true}}``; both shapes are accepted.
        """
        raw = self.json_arg("filters", {}) or {}
        if not isinstance(raw, dict):
            raise InvalidParameter("invalid filter: filters must be a JSON object")
        out: dict[str, list[str]] = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                out[key] = [k for k, v in value.items() if v]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            else:
                out[key] = [str(value)]
        return out

    @property
    def wants_upgrade(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return "upgrade" in connection and bool(self.headers.get("upgrade"))

    # -- body --

    async def body(self, limit: int | None = None) -> bytes:
        if self._body is None:
            chunks = [chunk async for chunk in self.stream(limit)]
            self._body = b"".join(chunks)
        return self._body

    async def json(self, default: Any = None) -> Any:
        """The body as JSON; an empty body gives ``default``."""
        raw = await self.body()
        if not raw.strip():
            return default
        try:
            return json.loads(raw)
        except ValueError as err:
            raise InvalidParameter(f"invalid JSON in request body: {err}") from None

    async def stream(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """Yield the body as it arrives (Content-Length or chunked)."""
        if self._body_consumed:
            if self._body:
                yield self._body
            return
        self._body_consumed = True
        total = 0
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await self.reader.readline()
                if not size_line:
                    raise InvalidParameter("request body ended inside a chunk")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise InvalidParameter("malformed chunked request body") from None
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    self._body_done = True
                    return
                total += size
                if limit is not None and total > limit:
                    raise InvalidParameter("request body too large")
                data = await self.reader.readexactly(size)
                await self.reader.readline()
                yield data
        length = int(self.headers.get("content-length", "0") or 0)
        if limit is not None and length > limit:
            raise InvalidParameter("request body too large")
        if length <= 0:
            self._body_done = True
        while length > 0:
            data = await self.reader.read(min(length, 256 * 1024))
            if not data:
                raise InvalidParameter("request body ended early")
            length -= len(data)
            if length <= 0:
                self._body_done = True
            yield data


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(
        status=status,
        body=json.dumps(obj).encode() + b"\n",
        content_type="application/json",
    )


def no_content() -> Response:
    return Response(status=204)


@dataclass
class StreamResponse:
    """A chunked response fed by an async iterator of byte strings.

    The headers are sent before the first item is awaited, which is what
    ``/wait`` and ``/events`` need. Closing the iterator on client
    disconnect lets producers clean up.
    """

    body: AsyncIterator[bytes]
    content_type: str = "application/json"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hijack:
    """Take over the connection after the status line.

    ``handler(reader, writer)`` runs once the ``101`` (or ``200``) headers
    are out; the connection is closed when it returns.
    """

    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    content_type: str = "application/vnd.docker.raw-stream"
    # exec start sends ``200`` without a body when detached: not a hijack.
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable["Response | StreamResponse | Hijack"]]
AnyResponse = Response | StreamResponse | Hijack


class RouteTable:
    """Routes of one API module, registered with decorators::

    routes = RouteTable()

    @routes.get("/containers/{name}/json")
    async def inspect_container(req: Request) -> Response: ...

    ``{name}`` matches one path segment; ``{name:.*}`` matches the rest,
    slashes included, as image names need.
    """

    def __init__(self) -> None:
        self.routes: list[tuple[str, str, Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((method, pattern, handler))
            return handler

        return register

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("GET", pattern)

    def post(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("POST", pattern)

    def put(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("PUT", pattern)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", pattern)

    def head(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("HEAD", pattern)


def _compile(pattern: str) -> re.Pattern[str]:
    def group(match: re.Match[str]) -> str:
        name, _, rule = match.group(1).partition(":")
        return f"(?P<{name}>.+)" if rule == ".*" else f"(?P<{name}>[^/]+)"

    return re.compile("^" + re.sub(r"\{([^}]+)\}", group, pattern) + "$")


VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class Router:
    """Dispatches requests to handlers, stripping the ``/v1.xx`` prefix."""

    def __init__(self, api_version: str, min_version: str) -> None:
        self.api_version = api_version
        self.min_version = min_version
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, table: RouteTable) -> None:
        for method, pattern, handler in table.routes:
            self._routes.append((method, _compile(pattern), handler))

    def resolve(self, req: Request) -> Handler:
        version = self.api_version
        match = VERSION_PREFIX.match(req.path)
        if match:
            version, req.path = match.group(1), match.group(2)
            if _version_tuple(version) > _version_tuple(self.api_version):
                raise InvalidParameter(
                    f"client version {version} is too new. Maximum supported API version is {self.api_version}"
                )
            if _version_tuple(version) < _version_tuple(self.min_version):
                raise InvalidParameter(
                    f"client version {version} is too old. Minimum supported API version is {self.min_version}, please upgrade your client to a newer version"
                )
        req.api_version = version
        path = req.path.rstrip("/") or "/"
        allowed = False
        for method, regex, handler in self._routes:
            found = regex.match(path)
            if not found:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed = True
                continue
            req.params = {k: unquote(v) for k, v in found.groupdict().items()}
            return handler
        if allowed:
            raise _MethodNotAllowed()
        raise NotFound("page not found")


class _MethodNotAllowed(EngineError):
    status = 405

    def __init__(self) -> None:
        super().__init__("method not allowed")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class HttpServer:
    """Serves one router on any number of listeners (unix or TCP)."""

    def __init__(
        self,
        router: Router,
        app: Any,
        common_headers: dict[str, str] | None = None,
    ) -> None:
        self.router = router
        self.app = app
        self.common_headers = common_headers or {}
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def listen_unix(self, path: str) -> None:
        server = await asyncio.start_unix_server(self._serve, path=path)
        self._servers.append(server)

    async def listen_tcp(self, host: str, port: int, ssl: Any = None) -> None:
        server = await asyncio.start_server(self._serve, host, port, ssl=ssl)
        self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, ClientGone, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if err.partial.strip():
                raise
            return None
        except asyncio.LimitOverrunError:
            raise ClientGone() from None
        if len(head) > MAX_HEADER_BYTES:
            raise ClientGone()
        return head

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await self._read_head(reader)
        if head is None:
            return False
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            await self._send(writer, Response(400, b"malformed request line\n"), "GET")
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        url = urlsplit(target)
        req = Request(
            method=method.upper(),
            path=unquote(url.path),
            query=parse_qs(url.query, keep_blank_values=True),
            headers=headers,
            reader=reader,
            writer=writer,
            app=self.app,
        )
        log.debug("%s %s", req.method, target)
        response: AnyResponse
        try:
            handler = self.router.resolve(req)
            response = await handler(req)
        except EngineError as err:
            if err.status >= 500:
                log.warning("%s %s failed: %s", req.method, target, err.message)
            response = _error_response(err.status, err.message)
        except asyncio.CancelledError:
            raise
        except (ConnectionError, ClientGone):
            raise
        except Exception as err:
            log.exception("%s %s: unexpected failure", req.method, target)
            response = _error_response(500, f"{type(err).__name__}: {err}")

        if isinstance(response, Hijack):
            await self._hijack(req, response)
            return False
        # A body the handler left unread must not be parsed as the next request.
        if not req._body_consumed:
            with contextlib.suppress(EngineError):
                async for _ in req.stream():
                    pass
        # One read half-way (docker cp into a missing folder: the 404 comes
        # while the tar still flows) cannot be resumed: the answer ends the
        # connection, or the rest of the body would be read as a request.
        unread = not req._body_done
        if unread and isinstance(response, Response):
            response.headers["Connection"] = "close"
        if isinstance(response, StreamResponse):
            await self._stream(req, writer, response)
        else:
            await self._send(writer, response, req.method)
        connection = headers.get("connection", "").lower()
        if _version.strip().upper() == "HTTP/1.0":
            keep = "keep-alive" in connection
        else:
            keep = "close" not in connection
        return keep and not unread and not isinstance(response, StreamResponse)

    def _head_bytes(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        merged = {**self.common_headers, **headers}
        lines += [f"{k}: {v}" for k, v in merged.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, method: str
    ) -> None:
        headers = dict(response.headers)
        if response.content_type:
            headers["Content-Type"] = response.content_type
        if response.status not in (204, 304):
            headers["Content-Length"] = str(len(response.body))
        writer.write(self._head_bytes(response.status, headers))
        if method != "HEAD" and response.status not in (204, 304):
            writer.write(response.body)
        await writer.drain()

    async def _stream(
        self, req: Request, writer: asyncio.StreamWriter, response: StreamResponse
    ) -> None:
        headers = {
            **response.headers,
            "Content-Type": response.content_type,
            "Transfer-Encoding": "chunked",
        }
        writer.write(self._head_bytes(response.status, headers))
        await writer.drain()
        body = response.body
        try:
            async for chunk in body:
                if not chunk:
                    continue
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except EngineError as err:
            # Headers are gone: report in band, as dockerd does for streams.
            log.info("%s %s: stream ended with %s", req.method, req.path, err.message)
            payload = json.dumps({"message": err.message}).encode()
            with contextlib.suppress(Exception):
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
                await writer.drain()
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _hijack(self, req: Request, response: Hijack) -> None:
        writer = req.writer
        headers = {**response.headers, "Content-Type": response.content_type}
        if req.wants_upgrade:
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = "tcp"
            status = 101
        else:
            status = 200
        writer.write(self._head_bytes(status, headers))
        await writer.drain()
        try:
            await response.handler(req.reader, writer)
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()


def _error_response(status: int, message: str) -> Response:
    return Response(
        status=status,
        body=json.dumps({"message": message}).encode() + b"\n",
        content_type="application/json",
    )
