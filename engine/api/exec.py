"""Engine API: exec (``docker exec``).

``POST /containers/{id}/exec`` registers a command, ``POST /exec/{id}/start``
runs it (hijacking the connection unless ``Detach``), ``GET /exec/{id}/json``
reports it, with the exit code the CLI turns into its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.api.container_io import stream_type
from engine.containers.execs import ExecManager, exec_manager
from engine.errors import InvalidParameter
from engine.http.server import (
    Hijack,
    Request,
    Response,
    RouteTable,
    json_response,
)

log = logging.getLogger(__name__)

routes = RouteTable()


def _execs(req: Request) -> ExecManager:
    return exec_manager(req.app)


@routes.post("/containers/{name}/exec")
async def create_exec(req: Request) -> Response:
    c = req.app.containers.get(req.params["name"])
    body = await req.json({})
    if not isinstance(body, dict):
        raise InvalidParameter("exec config must be a JSON object")
    ex = _execs(req).create(c, body)
    return json_response({"Id": ex.id}, status=201)


@routes.post("/exec/{id}/start")
async def start_exec(req: Request) -> Response | Hijack:
    manager = _execs(req)
    ex = manager.get(req.params["id"])
    body: Any = await req.json({}) or {}
    if not isinstance(body, dict):
        raise InvalidParameter("exec start config must be a JSON object")
    detach = bool(body.get("Detach"))
    if "Tty" in body and body["Tty"] is not None:
        ex.config["Tty"] = bool(body["Tty"])
    console_size = body.get("ConsoleSize")

    if detach:
        await manager.start(ex, detach=True, console_size=console_size)
        return Response(status=200)

    # conmon and its attach socket are ready before the 101 goes out; the
    # process starts once the client reads (see ExecManager.start).
    await manager.start(ex, detach=False, console_size=console_size)

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await manager.serve(ex, reader, writer)

    return Hijack(handler, content_type=stream_type(req, ex.tty))


@routes.get("/exec/{id}/json")
async def inspect_exec(req: Request) -> Response:
    return json_response(_execs(req).get(req.params["id"]).inspect())


@routes.post("/exec/{id}/resize")
async def resize_exec(req: Request) -> Response:
    manager = _execs(req)
    ex = manager.get(req.params["id"])
    height = req.int_arg("h", 0) or 0
    width = req.int_arg("w", 0) or 0
    manager.resize(ex, height, width)
    return Response(status=200, content_type="text/plain; charset=utf-8")
