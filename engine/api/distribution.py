"""Engine API: ``POST /auth`` (docker login) and ``GET /distribution/{name}/json``.

Pull and push live in :mod:`engine.api.images` and call ``daemon.registry``
as these do::

    POST /auth {"username": "u", "password": "p", "serveraddress": "127.0.0.1:5000"}
    -> 200 {"Status": "Login Succeeded", "IdentityToken": ""}
"""

from __future__ import annotations

from engine.errors import InvalidParameter
from engine.http.server import Request, Response, RouteTable, json_response

routes = RouteTable()


@routes.post("/auth")
async def login(req: Request) -> Response:
    body = await req.json(default={})
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON in request body: want an object")
    return json_response(await req.app.registry.login(body))


@routes.get("/distribution/{name:.*}/json")
async def inspect_distribution(req: Request) -> Response:
    auth = req.headers.get("x-registry-auth")
    return json_response(await req.app.registry.inspect(req.params["name"], auth))
