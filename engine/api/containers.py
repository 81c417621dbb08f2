"""Engine API: the container lifecycle endpoints.

create, list, inspect, start, stop, kill, restart, pause, unpause, wait,
remove, rename, update and prune. Attach, logs, resize, top, stats,
archive, export and changes live in ``container_io.py``.

``POST /containers/{id}/wait`` answers ``200`` and its headers at once and
the JSON only at the exit: ``docker run`` waits for those headers before it
calls ``/start``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from engine.containers.views import graph_driver, select, summary
from engine.errors import EngineError, InvalidParameter
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    StreamResponse,
    json_response,
    no_content,
)

log = logging.getLogger(__name__)

routes = RouteTable()


def _timeout(req: Request) -> int | None:
    return req.int_arg("t", req.int_arg("timeout"))


@routes.post("/containers/create")
async def create_container(req: Request) -> Response:
    body = await req.json(default=None)
    if body is None:
        raise InvalidParameter("config cannot be empty in order to create a container")
    platform = req.arg("platform") or ""
    if platform and not platform.startswith("linux"):
        raise InvalidParameter(
            f"platform {platform!r} is not supported: Linux containers only"
        )
    c = req.app.containers.create(body, req.arg("name") or None)
    return json_response({"Id": c.id, "Warnings": []}, status=201)


@routes.get("/containers/json")
async def list_containers(req: Request) -> Response:
    manager = req.app.containers
    limit = req.int_arg("limit")
    size = req.flag("size")
    chosen = select(manager, req.filters(), req.flag("all"), limit)
    if size:
        rows = await asyncio.to_thread(
            lambda: [summary(manager, c, True) for c in chosen]
        )
    else:
        rows = [summary(manager, c, False) for c in chosen]
    return json_response(rows)


@routes.post("/containers/prune")
async def prune_containers(req: Request) -> Response:
    deleted, reclaimed = await req.app.containers.prune(req.filters())
    return json_response(
        {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}
    )


@routes.get("/containers/{name}/json")
async def inspect_container(req: Request) -> Response:
    daemon = req.app
    c = daemon.containers.get(req.params["name"])
    try:
        image = daemon.images.get(c.image_id)
        lower = [str(p) for p in daemon.images.layer_dirs(image)]
    except EngineError:
        lower = []
    body = c.inspect(graph_driver(c, lower))
    if req.flag("size"):
        body["SizeRw"] = await asyncio.to_thread(daemon.containers.size_rw, c)
        body["SizeRootFs"] = await asyncio.to_thread(daemon.containers.size_root_fs, c)
    return json_response(body)


@routes.post("/containers/{name}/start")
async def start_container(req: Request) -> Response:
    if req.arg("checkpoint"):
        raise InvalidParameter("checkpoints are not supported")
    await req.body()
    manager = req.app.containers
    c = manager.get(req.params["name"])
    await manager.start_container(c)
    return no_content()


@routes.post("/containers/{name}/stop")
async def stop_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    await manager.stop_container(c, _timeout(req), req.arg("signal"))
    return no_content()


@routes.post("/containers/{name}/restart")
async def restart_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    await manager.restart(c, _timeout(req))
    return no_content()


@routes.post("/containers/{name}/kill")
async def kill_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    await manager.kill(c, req.arg("signal"))
    return no_content()


@routes.post("/containers/{name}/pause")
async def pause_container(req: Request) -> Response:
    manager = req.app.containers
    await manager.pause(manager.get(req.params["name"]))
    return no_content()


@routes.post("/containers/{name}/unpause")
async def unpause_container(req: Request) -> Response:
    manager = req.app.containers
    await manager.unpause(manager.get(req.params["name"]))
    return no_content()


@routes.post("/containers/{name}/wait")
async def wait_container(req: Request) -> StreamResponse:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    condition = req.arg("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidParameter(f"invalid condition: {condition!r}")
    # Registered now, before the headers leave: the /start that follows
    # cannot exit before anyone listens.
    future = manager.wait_future(c, condition)

    async def body() -> AsyncIterator[bytes]:
        try:
            code = await future
        finally:
            if not future.done():
                future.cancel()
        # A start failure was already the /start answer; with --rm the
        # CLI would print it twice (dockerd sends no error here either).
        error = None if condition == "removed" else c.state.get("Error") or None
        yield (
            json.dumps(
                {"Error": {"Message": error} if error else None, "StatusCode": code}
            ).encode()
            + b"\n"
        )

    return StreamResponse(body())


@routes.delete("/containers/{name}")
async def remove_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    if req.flag("link"):
        raise InvalidParameter("links (--link, rm --link) are not supported")
    await manager.remove(c, force=req.flag("force"), volumes=req.flag("v"))
    return no_content()


@routes.post("/containers/{name}/rename")
async def rename_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    manager.rename(c, req.arg("name") or "")
    return no_content()


@routes.post("/containers/{name}/update")
async def update_container(req: Request) -> Response:
    manager = req.app.containers
    c = manager.get(req.params["name"])
    body = await req.json(default={})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: the update must be an object")
    warnings = await manager.update(c, body)
    return json_response({"Warnings": warnings})
