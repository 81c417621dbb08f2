"""Engine API: volumes endpoints."""

from __future__ import annotations

from typing import Any

from engine.errors import InvalidParameter
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    json_response,
    no_content,
)

routes = RouteTable()


@routes.get("/volumes")
async def list_volumes(req: Request) -> Response:
    volumes = req.app.volumes.list_volumes(req.filters())
    return json_response({"Volumes": [v.inspect() for v in volumes], "Warnings": []})


@routes.post("/volumes/create")
async def create_volume(req: Request) -> Response:
    body: Any = await req.json({})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid volume config: body must be a JSON object")
    if body.get("ClusterVolumeSpec"):
        raise InvalidParameter("cluster volumes need swarm mode, which Dockyard lacks")
    volume = req.app.volumes.create(
        body.get("Name") or None,
        driver=body.get("Driver") or "local",
        labels=body.get("Labels") or None,
        driver_opts=body.get("DriverOpts") or None,
    )
    return json_response(volume.inspect(), status=201)


@routes.get("/volumes/{name}")
async def inspect_volume(req: Request) -> Response:
    return json_response(req.app.volumes.get(req.params["name"]).inspect())


@routes.delete("/volumes/{name}")
async def remove_volume(req: Request) -> Response:
    req.app.volumes.remove(req.params["name"], force=req.flag("force"))
    return no_content()


@routes.post("/volumes/prune")
async def prune_volumes(req: Request) -> Response:
    # Before API 1.42 prune removed named volumes too.
    legacy = tuple(int(x) for x in req.api_version.split(".")) < (1, 42)
    names, reclaimed = req.app.volumes.prune(req.filters(), all=legacy)
    return json_response({"VolumesDeleted": names, "SpaceReclaimed": reclaimed})
