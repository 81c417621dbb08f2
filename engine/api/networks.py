"""Engine API: networks endpoints."""

from __future__ import annotations

from typing import Any

from engine.errors import InvalidParameter, NotFound
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    json_response,
)

routes = RouteTable()


async def _body(req: Request) -> dict[str, Any]:
    body = await req.json({})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid request body: a JSON object is needed")
    return body


@routes.get("/networks")
async def list_networks(req: Request) -> Response:
    networks = req.app.networks
    # API 1.28+ lists networks without their containers.
    return json_response([n.inspect() for n in networks.list_networks(req.filters())])


@routes.get("/networks/{id}")
async def inspect_network(req: Request) -> Response:
    networks = req.app.networks
    net = networks.get(req.params["id"])
    scope = req.arg("scope")
    if scope and scope != "local":
        raise NotFound(f"network {req.params['id']} not found")
    return json_response(networks.inspect(net))


@routes.post("/networks/create")
async def create_network(req: Request) -> Response:
    net = await req.app.networks.create_network(await _body(req))
    return json_response({"Id": net.id, "Warning": ""}, status=201)


@routes.delete("/networks/{id}")
async def remove_network(req: Request) -> Response:
    await req.app.networks.remove_network(req.params["id"])
    return Response(status=204)


@routes.post("/networks/{id}/connect")
async def connect_network(req: Request) -> Response:
    body = await _body(req)
    container = req.app.containers.get(body.get("Container") or "")
    await req.app.networks.connect(
        container, req.params["id"], body.get("EndpointConfig") or None
    )
    return Response(status=200)


@routes.post("/networks/{id}/disconnect")
async def disconnect_network(req: Request) -> Response:
    body = await _body(req)
    container = req.app.containers.get(body.get("Container") or "")
    await req.app.networks.disconnect(
        container, req.params["id"], bool(body.get("Force"))
    )
    return Response(status=200)


@routes.post("/networks/prune")
async def prune_networks(req: Request) -> Response:
    removed = await req.app.networks.prune(req.filters())
    return json_response({"NetworksDeleted": removed})
