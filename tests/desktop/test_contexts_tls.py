"""Docker contexts for TLS and named-pipe endpoints, checked with the real CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from desktop.machine import contexts, contexts_tls
from desktop.machine.api_listener import Endpoint, endpoint_of
from desktop.machine.api_listener_tls import TLSListener, ensure_certificates
from desktop.machine.forwarder import splice
from tests.support.engine import EngineProcess

DOCKER = "/usr/local/bin/docker"


def docker(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(config)
    return subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=120
    )


def tree(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of everything under ``root``."""
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ours"
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


def test_tls_context_matches_what_the_cli_writes(config: Path, tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", "dev")
    host = "tcp://127.0.0.1:23750"
    theirs = tmp_path / "theirs"
    made = docker(
        theirs,
        "context",
        "create",
        "dockyard-dev",
        "--description",
        "Dockyard machine dev",
        "--docker",
        f"host={host},ca={files.ca},cert={files.client_cert},key={files.client_key}",
    )
    assert made.returncode == 0, made.stderr

    contexts_tls.write_tls_context("dockyard-dev", host, files.root, "dev")

    # The CLI makes the meta folder with its umask; compare the rest exactly.
    ours_tree, theirs_tree = tree(config / "contexts"), tree(theirs / "contexts")
    assert sorted(ours_tree) == sorted(theirs_tree)
    for path, mode in theirs_tree.items():
        if path.startswith("tls"):
            assert ours_tree[path] == mode, path
    digest = contexts.context_dir("dockyard-dev").name
    meta = f"meta/{digest}/meta.json"
    assert json.loads((config / "contexts" / meta).read_text()) == json.loads(
        (theirs / "contexts" / meta).read_text()
    )
    for name in ("ca.pem", "cert.pem", "key.pem"):
        rel = Path("contexts/tls") / digest / "docker" / name
        assert (config / rel).read_bytes() == (theirs / rel).read_bytes()

    inspect = docker(config, "context", "inspect", "dockyard-dev")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)[0]["TLSMaterial"] == {
        "docker": ["ca.pem", "cert.pem", "key.pem"]
    }

    # Back to a unix socket: no TLS files stay behind.
    contexts_tls.write_endpoint_context(
        "dockyard-dev", Endpoint("unix", "unix:///x/docker.sock"), "dev"
    )
    assert not contexts.tls_dir("dockyard-dev").exists()

    # No api.json (a forwarder from before): the unix socket.
    written = contexts_tls.write_machine_context(
        "dockyard-dev", tmp_path / "nowhere", "unix:///y/docker.sock", "dev"
    )
    assert json.loads(written.read_text())["Endpoints"]["docker"]["Host"] == (
        "unix:///y/docker.sock"
    )


def test_npipe_context(config: Path) -> None:
    # The Linux CLI refuses to create an npipe context ("protocol not
    # available"), so this checks the file the Windows CLI reads.
    path = contexts_tls.write_npipe_context("dockyard", "default")
    meta = json.loads(path.read_text())
    assert meta["Endpoints"]["docker"] == {
        "Host": "npipe:////./pipe/dockyard_default",
        "SkipTLSVerify": False,
    }
    listed = docker(
        config, "context", "ls", "--format", "{{.Name}} {{.DockerEndpoint}}"
    )
    assert "dockyard npipe:////./pipe/dockyard_default" in listed.stdout


@pytest.fixture
def tls_listener(engine: EngineProcess, tmp_path: Path) -> Iterator[TLSListener]:
    def proxy(conn: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(str(engine.socket))
        splice(conn, cast(Any, upstream))

    listener = TLSListener(tmp_path / "tls", "dev", proxy)
    thread = threading.Thread(target=listener.serve, daemon=True)
    thread.start()
    yield listener
    listener.close()
    thread.join(10)


@pytest.mark.root
def test_docker_context_reaches_the_engine_over_tls(
    config: Path, tls_listener: TLSListener
) -> None:
    contexts_tls.write_endpoint_context(
        "dockyard-dev", endpoint_of(tls_listener), "dev"
    )
    version = docker(
        config, "--context", "dockyard-dev", "version", "--format", "{{.Server.Os}}"
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "linux"
    run = docker(
        config,
        "--context",
        "dockyard-dev",
        "run",
        "--rm",
        "dockyard-test/busybox",
        "echo",
        "via context",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "via context\n"
