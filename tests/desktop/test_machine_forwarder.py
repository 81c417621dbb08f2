"""The forwarder's HTTP helpers and the docker context files (no VM)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from desktop.machine import contexts
from desktop.machine.forwarder import _dechunk


def test_dechunk_joins_chunks_and_stops_at_the_last() -> None:
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    assert _dechunk(body) == b"hello, world"


def test_context_files_follow_the_docker_cli_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    path = contexts.write_context("dockyard-dev", "unix:///x/docker.sock", "dev")
    digest = hashlib.sha256(b"dockyard-dev").hexdigest()
    assert path == tmp_path / "contexts" / "meta" / digest / "meta.json"
    assert (
        json.loads(path.read_text())["Endpoints"]["docker"]["Host"]
        == "unix:///x/docker.sock"
    )
    contexts.remove_context("dockyard-dev")
    assert not path.parent.exists()
