"""Engine API: containers endpoints."""

from __future__ import annotations

from engine.http.server import RouteTable

routes = RouteTable()
