"""The API server itself: ping headers, version prefixes, error shapes."""

from __future__ import annotations

import json

from tests.support.engine import EngineProcess, UnixHTTPConnection


def test_ping_headers(engine: EngineProcess) -> None:
    conn = UnixHTTPConnection(str(engine.socket))
    conn.request("HEAD", "/_ping")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("Api-Version") == "1.47"
    assert resp.getheader("Ostype") == "linux"
    status, body = engine.request("GET", "/v1.41/_ping")
    assert (status, body) == (200, b"OK")


def test_version_prefix_too_new(engine: EngineProcess) -> None:
    status, body = engine.request("GET", "/v1.99/version")
    assert status == 400
    assert "too new" in json.loads(body)["message"]


def test_unknown_route_is_json_404(engine: EngineProcess) -> None:
    status, body = engine.request("GET", "/v1.47/nothing/here")
    assert status == 404
    assert json.loads(body) == {"message": "page not found"}


def test_docker_version(engine: EngineProcess) -> None:
    result = engine.docker("version", "--format", "{{.Server.APIVersion}}", check=True)
    assert result.stdout.strip() == "1.47"


def test_http_1_0_connection_closes_after_the_answer(engine: EngineProcess) -> None:
    """HTTP/1.0 without keep-alive: the engine closes, so a reader sees EOF."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(engine.socket))
        sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert data.endswith(b"OK")
