"""Engine API: ``POST /build`` (the legacy builder) and ``POST /build/prune``.

The docker CLI 28 without buildx, docker-py and docker-compose 1.29 send a
tar context with the options in the query string::

    POST /v1.41/build?dockerfile=Dockerfile&t=app%3A1&buildargs=%7B...%7D&version=1
    Content-Type: application/x-tar
    X-Registry-Config: <base64 JSON of registry -> auth>

A bad context or Dockerfile is answered with a plain 400 before any output,
as dockerd does; once the steps run, progress and errors travel in the JSON
stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidParameter, Unsupported
from engine.http.server import (
    Request,
    Response,
    RouteTable,
    StreamResponse,
    json_response,
)

if TYPE_CHECKING:
    from engine.build.builder import BuildOptions

routes = RouteTable()

# Options of the build API this engine refuses instead of ignoring, because
# a build would silently differ from what the user asked for.
UNSUPPORTED = {"squash": "--squash", "isolation": "--isolation"}


@routes.post("/build")
async def build(req: Request) -> StreamResponse:
    options = parse_options(req)
    prepared = await req.app.builder.prepare(options, req.stream())

    async def client_gone() -> None:
        # The body is read: the next read ends only when the client hangs
        # up (Ctrl-C), which should stop a RUN that prints nothing.
        with contextlib.suppress(ConnectionError, OSError):
            if await req.reader.read(1):
                return
        prepared.cancel()

    async def stream() -> AsyncIterator[bytes]:
        watcher = asyncio.create_task(client_gone())
        try:
            async for message in prepared.run():
                yield json.dumps(message).encode() + b"\r\n"
        finally:
            watcher.cancel()

    return StreamResponse(stream())


@routes.post("/build/prune")
async def prune(req: Request) -> Response:
    return json_response(req.app.builder.prune())


@routes.post("/build/cancel")
async def cancel(req: Request) -> Response:
    # BuildKit sessions only; the legacy builder stops when the client goes.
    return Response(status=200)


def parse_options(req: Request) -> BuildOptions:
    """The query string of ``POST /build`` as BuildOptions.

    Raises InvalidParameter for malformed JSON values, Unsupported for an
    option this engine does not implement.
    """
    from engine.build.builder import BuildOptions, check_platform

    for name, flag in UNSUPPORTED.items():
        value = req.arg(name)
        if value and value not in ("0", "false", "False", "default"):
            raise Unsupported(f"{flag} is not supported by this engine's builder")
    version = req.arg("version")
    if version == "2":
        raise Unsupported(
            "BuildKit (builder version 2) is not supported; use the legacy builder "
            "(DOCKER_BUILDKIT=0)"
        )
    build_args = _json_object(req, "buildargs")
    labels = _json_object(req, "labels")
    cache_from = req.json_arg("cachefrom", []) or []
    if not isinstance(cache_from, list):
        raise InvalidParameter("invalid cachefrom: expected a JSON array")
    extra_hosts = [h for value in req.args("extrahosts") for h in value.split(",") if h]
    platform = req.arg("platform") or ""
    check_platform(platform)
    return BuildOptions(
        tags=[t for t in req.args("t") if t],
        dockerfile=req.arg("dockerfile") or None,
        build_args={
            str(k): (None if v is None else str(v)) for k, v in build_args.items()
        },
        labels={str(k): str(v) for k, v in labels.items()},
        nocache=req.flag("nocache"),
        pull=req.flag("pull"),
        rm=req.flag("rm", True),
        forcerm=req.flag("forcerm"),
        quiet=req.flag("q"),
        target=req.arg("target") or "",
        network_mode=req.arg("networkmode") or "",
        shm_size=req.int_arg("shmsize", 0) or 0,
        platform=platform,
        remote=req.arg("remote") or "",
        cache_from=[str(c) for c in cache_from],
        extra_hosts=extra_hosts,
        resources=_resources(req),
        auth_configs=_registry_config(req.headers.get("x-registry-config", "")),
    )


# Query parameters of /build that limit the RUN containers, by HostConfig field.
RESOURCE_INTS = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpushares": "CpuShares",
    "cpuperiod": "CpuPeriod",
    "cpuquota": "CpuQuota",
}
RESOURCE_STRINGS = {
    "cpusetcpus": "CpusetCpus",
    "cpusetmems": "CpusetMems",
    "cgroupparent": "CgroupParent",
}


def _resources(req: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field_name in RESOURCE_INTS.items():
        value = req.int_arg(name, 0)
        if value:
            out[field_name] = value
    for name, field_name in RESOURCE_STRINGS.items():
        text = req.arg(name)
        if text:
            out[field_name] = text
    ulimits = req.json_arg("ulimits", None)
    if ulimits:
        out["Ulimits"] = ulimits
    return out


def _json_object(req: Request, name: str) -> dict[str, Any]:
    try:
        value = req.json_arg(name, {}) or {}
    except InvalidParameter as err:
        raise InvalidParameter(f"error reading {name}: {err.message}") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"error reading {name}: expected a JSON object")
    return value


def _registry_config(header: str) -> dict[str, Any]:
    if not header:
        return {}
    padded = header + "=" * (-len(header) % 4)
    for decode in (base64.urlsafe_b64decode, base64.standard_b64decode):
        try:
            value = json.loads(decode(padded))
        except (binascii.Error, ValueError):
            continue
        return value if isinstance(value, dict) else {}
    return {}
