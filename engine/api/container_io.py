"""Engine API: a container's input and output.

attach (hijacked), logs, resize, top, stats, archive (``docker cp``),
export and changes (``docker diff``). The lifecycle endpoints are in
``containers.py``; exec in ``exec.py``.

Since API 1.42 dockerd labels a stream without TTY
``application/vnd.docker.multiplexed-stream``; older clients get
``application/vnd.docker.raw-stream`` for both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from engine.containers import archive, stats
from engine.containers.attach import is_tty
from engine.containers.logs import LogOptions, LogReader, parse_since
from engine.containers.streams import parse_detach_keys, race_disconnect
from engine.errors import EngineError, InvalidParameter
from engine.http.server import (
    Hijack,
    Request,
    Response,
    RouteTable,
    StreamResponse,
    json_response,
)

log = logging.getLogger(__name__)

routes = RouteTable()

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


def stream_type(req: Request, tty: bool) -> str:
    if tty or _older(req.api_version, "1.42"):
        return RAW_STREAM
    return MULTIPLEXED_STREAM


def _older(version: str, than: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    try:
        return parts(version) < parts(than)
    except ValueError:
        return False


class _NotImplemented(EngineError):
    """dockerd's 501, for a log driver that keeps nothing to read."""

    status = 501


def _container(req: Request) -> Any:
    return req.app.containers.get(req.params["name"])


def _tail(value: str | None) -> int | None:
    """``tail``: a line count; dockerd reads anything else ("all", "x") as all."""
    try:
        count = int(value or "")
    except ValueError:
        return None
    return None if count < 0 else count


# -- attach --


@routes.post("/containers/{name}/attach")
async def attach_container(req: Request) -> Hijack:
    daemon = req.app
    c = _container(req)
    detach_keys = parse_detach_keys(req.arg("detachKeys"))
    want_stdin = req.flag("stdin")
    want_stdout = req.flag("stdout")
    want_stderr = req.flag("stderr")
    replay = req.flag("logs")
    stream = req.flag("stream")
    tty = is_tty(c)

    # The session exists before the 101 leaves: output of a /start that
    # follows is never missed.
    serve = None
    if stream:
        serve = await daemon.containers.attach.open_session(
            c,
            stdin=want_stdin,
            stdout=want_stdout,
            stderr=want_stderr,
            detach_keys=detach_keys,
        )

    # dockerd logs an attach event for every accepted attach (compose and
    # `docker events` watchers see it between create and start).
    config = c.config or {}
    attrs = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
    attrs.update(name=c.name.lstrip("/"), image=str(config.get("Image", "")))
    daemon.events.publish("container", "attach", c.id, attrs)

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if replay:
            options = LogOptions(stdout=want_stdout, stderr=want_stderr)
            async for chunk in LogReader(daemon).stream(c, options):
                writer.write(chunk)
                await writer.drain()
        if serve is not None:
            await serve(reader, writer)

    return Hijack(handler, content_type=stream_type(req, tty))


@routes.get("/containers/{name}/attach/ws")
async def attach_websocket(req: Request) -> Response:
    raise InvalidParameter(
        "attach over websocket is not supported by Dockyard: use POST /containers/{id}/attach"
    )


# -- logs --


@routes.get("/containers/{name}/logs")
async def container_logs(req: Request) -> StreamResponse:
    c = _container(req)
    options = LogOptions(
        stdout=req.flag("stdout"),
        stderr=req.flag("stderr"),
        follow=req.flag("follow"),
        since_ns=parse_since(req.arg("since"), "since"),
        until_ns=parse_since(req.arg("until"), "until"),
        timestamps=req.flag("timestamps"),
        tail=_tail(req.arg("tail")),
        details=req.flag("details"),
    )
    if not options.stdout and not options.stderr:
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    log_config = c.host_config.get("LogConfig") or {}
    if log_config.get("Type") == "none":
        raise _NotImplemented("configured logging driver does not support reading")
    body = LogReader(req.app).stream(c, options)
    if options.follow:
        body = race_disconnect(body, req.reader)
    return StreamResponse(body, content_type=stream_type(req, is_tty(c)))


# -- resize --


def _size(req: Request) -> tuple[int, int]:
    height = req.int_arg("h", 0) or 0
    width = req.int_arg("w", 0) or 0
    if height < 0 or width < 0 or height > 65535 or width > 65535:
        raise InvalidParameter("invalid terminal size")
    return height, width


@routes.post("/containers/{name}/resize")
async def resize_container(req: Request) -> Response:
    c = _container(req)
    height, width = _size(req)
    req.app.containers.attach.resize(c, height, width)
    return Response(status=200, content_type="text/plain; charset=utf-8")


# -- top and stats --


@routes.get("/containers/{name}/top")
async def container_top(req: Request) -> Response:
    c = _container(req)
    result = await asyncio.to_thread(stats.top, c, req.arg("ps_args") or "")
    return json_response(result)


@routes.get("/containers/{name}/stats")
async def container_stats(req: Request) -> StreamResponse:
    c = _container(req)
    stream = req.flag("stream", True)
    one_shot = req.flag("one-shot")
    if one_shot and stream:
        raise InvalidParameter("cannot have stream=true and one-shot=true")
    collector = stats.StatsCollector(req.app)

    async def body() -> AsyncIterator[bytes]:
        async for sample in collector.samples(c, stream=stream, one_shot=one_shot):
            yield json.dumps(sample).encode() + b"\n"

    produced: AsyncIterator[bytes] = body()
    if stream:
        produced = race_disconnect(produced, req.reader)
    return StreamResponse(produced)


# -- archive (docker cp), export and changes --


def _stat_header(stat: dict[str, Any]) -> dict[str, str]:
    encoded = base64.b64encode(json.dumps(stat).encode()).decode()
    return {"X-Docker-Container-Path-Stat": encoded}


def _archive_path(req: Request) -> str:
    path = req.arg("path")
    if not path:
        raise InvalidParameter("path is required")
    return path


@routes.head("/containers/{name}/archive")
async def stat_archive_path(req: Request) -> Response:
    c = _container(req)
    path = _archive_path(req)
    stat = await archive.stat_path(req.app, c, path)
    return Response(status=200, headers=_stat_header(stat))


@routes.get("/containers/{name}/archive")
async def get_archive(req: Request) -> Response | StreamResponse:
    c = _container(req)
    path = _archive_path(req)
    if req.method == "HEAD":
        stat = await archive.stat_path(req.app, c, path)
        return Response(status=200, headers=_stat_header(stat))
    stat, body = await archive.read_archive(req.app, c, path)
    return StreamResponse(
        body, content_type="application/x-tar", headers=_stat_header(stat)
    )


@routes.put("/containers/{name}/archive")
async def put_archive(req: Request) -> Response:
    c = _container(req)
    path = _archive_path(req)
    await archive.extract_archive(
        req.app,
        c,
        path,
        req.stream(),
        no_overwrite_dir_non_dir=req.flag("noOverwriteDirNonDir"),
        copy_uid_gid=req.flag("copyUIDGID"),
    )
    return Response(status=200)


@routes.get("/containers/{name}/export")
async def export_container(req: Request) -> StreamResponse:
    c = _container(req)
    return StreamResponse(
        archive.export_rootfs(req.app, c), content_type="application/octet-stream"
    )


@routes.get("/containers/{name}/changes")
async def container_changes(req: Request) -> Response:
    c = _container(req)
    changes = await archive.changes(req.app, c)
    return json_response(changes or None)
