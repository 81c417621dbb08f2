"""The Engine API, one module per resource, gathered into one router."""

from __future__ import annotations

from engine import API_VERSION, MIN_API_VERSION
from engine.api import (
    build,
    container_io,
    containers,
    distribution,
    exec,
    images,
    networks,
    system,
    volumes,
)
from engine.http.server import Router

MODULES = (
    system,
    containers,
    container_io,
    exec,
    images,
    volumes,
    networks,
    build,
    distribution,
)


def build_router() -> Router:
    router = Router(API_VERSION, MIN_API_VERSION)
    for module in MODULES:
        router.add(module.routes)
    return router
