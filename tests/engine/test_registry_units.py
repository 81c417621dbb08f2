"""The registry service's pure parts: headers, error texts, platform choice."""

from __future__ import annotations

import base64
import json

import pytest

from engine.errors import InvalidParameter
from engine.registry.auth import decode_auth_header
from engine.registry.client import error_text
from engine.registry.progress import bar, human_size
from engine.registry.pull import Platform, parse_platform, select_manifest
from engine.registry.service import _login_domain, _pull_reference


def test_x_registry_auth_decoding() -> None:
    assert decode_auth_header("e30=").empty
    assert decode_auth_header(None).empty
    doc = {"username": "u", "password": "p", "serveraddress": "reg:5000"}
    raw = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    creds = decode_auth_header(raw)
    assert (creds.username, creds.password, creds.server_address) == (
        "u",
        "p",
        "reg:5000",
    )
    token = base64.urlsafe_b64encode(b'{"identitytoken": "tok"}').decode()
    assert decode_auth_header(token).identity_token == "tok"
    with pytest.raises(InvalidParameter, match="X-Registry-Auth"):
        decode_auth_header("!!!not base64")


def test_registry_error_texts() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    assert error_text(body, 404, "Not Found") == "manifest unknown: manifest unknown"
    assert error_text(b'{"details":"bad password"}', 401, "") == "bad password"
    assert (
        error_text(b"<html>", 502, "Bad Gateway") == "unexpected status 502 Bad Gateway"
    )


def test_platform_selection() -> None:
    index = {
        "manifests": [
            {
                "digest": "sha256:a",
                "platform": {"os": "linux", "architecture": "arm", "variant": "v6"},
            },
            {
                "digest": "sha256:b",
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
            {
                "digest": "sha256:c",
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "digest": "sha256:d",
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ]
    }
    assert (
        select_manifest(index, Platform("linux", "arm", "v7"))["digest"] == "sha256:b"
    )
    assert select_manifest(index, Platform("linux", "arm64"))["digest"] == "sha256:c"
    assert (
        select_manifest(index, Platform("linux", "amd64", ""))["digest"] == "sha256:d"
    )
    assert parse_platform("linux/aarch64") == Platform("linux", "arm64")
    assert parse_platform("") is None
    with pytest.raises(InvalidParameter):
        parse_platform("linux")


def test_references_and_login_servers() -> None:
    assert str(_pull_reference("busybox", None)) == "docker.io/library/busybox:latest"
    digest = "sha256:" + "a" * 64
    assert _pull_reference("localhost:5000/x", digest).digest == digest
    assert _pull_reference("localhost:5000/x", "2").tag == "2"
    assert _login_domain("https://index.docker.io/v1/") == "docker.io"
    assert _login_domain("127.0.0.1:5000") == "127.0.0.1:5000"
    assert _login_domain("https://ghcr.io") == "ghcr.io"


def test_progress_bar() -> None:
    assert human_size(1_500_000) == "1.5MB"
    assert bar(0, 100).startswith("[>")
    assert bar(100, 100).startswith("[" + "=" * 50 + "]")
