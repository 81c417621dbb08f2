"""System endpoints and listeners: info, df, events, TCP with and without TLS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cleanup_engine, make_engine, need_root
from tests.support.engine import EngineProcess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_info_counts_and_fields(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("info", "--format", "{{json .}}", check=True)
    info = json.loads(result.stdout)
    assert info["OSType"] == "linux"
    assert info["Driver"] == "overlay2"
    assert info["Images"] >= 1
    assert info["DefaultRuntime"] in ("crun", "runc")
    assert info["IndexServerAddress"].startswith("https://")
    assert info["DockerRootDir"].endswith("/data")


def test_system_df_lists_images(engine: EngineProcess, busybox: str) -> None:
    status, body = engine.request("GET", "/v1.47/system/df")
    assert status == 200
    usage = json.loads(body)
    tags = [tag for image in usage["Images"] for tag in image.get("RepoTags") or []]
    assert busybox in tags
    assert usage["LayersSize"] > 0
    result = engine.docker("system", "df", check=True)
    assert "Images" in result.stdout


def test_events_since_until_and_filters(engine: EngineProcess) -> None:
    start = time.time()
    engine.docker("volume", "create", "evvol", check=True)
    engine.docker("volume", "rm", "evvol", check=True)
    until = time.time() + 0.5
    result = engine.docker(
        "events",
        "--since",
        f"{start:.3f}",
        "--until",
        f"{until:.3f}",
        "--filter",
        "type=volume",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}}",
        check=True,
        timeout=20,
    )
    lines = result.stdout.splitlines()
    assert "volume create evvol" in lines
    assert "volume destroy evvol" in lines
    assert all(line.startswith("volume ") for line in lines)


def test_events_stream_live(engine: EngineProcess) -> None:
    """A subscriber sees an event published after it connected."""
    proc = subprocess.Popen(
        ["docker", "events", "--filter", "type=volume", "--format", "{{.Action}}"],
        env=engine.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the subscription reach the engine
        engine.docker("volume", "create", "livevol", check=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "create"
    finally:
        proc.terminate()
        proc.wait(5)
        engine.docker("volume", "rm", "livevol")


def test_events_bad_filter_json(engine: EngineProcess) -> None:
    status, body = engine.request("GET", "/v1.47/events?filters=%7Bnot-json")
    assert status == 400
    assert "filters" in json.loads(body)["message"]


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="dysys-", dir="/var/tmp"))
    yield root


def test_tcp_loopback_without_tls(scratch_root: Path) -> None:
    need_root()
    port = _free_port()
    eng = make_engine(scratch_root, "--host", f"tcp://127.0.0.1:{port}")
    eng.start()
    try:
        env = eng.env()
        env["DOCKER_HOST"] = f"tcp://127.0.0.1:{port}"
        result = subprocess.run(
            ["docker", "version", "--format", "{{.Server.APIVersion}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.strip() == "1.47", result.stderr
    finally:
        cleanup_engine(eng)


def test_tcp_off_loopback_needs_tls(scratch_root: Path) -> None:
    need_root()
    eng = make_engine(scratch_root, "--host", f"tcp://0.0.0.0:{_free_port()}")
    with pytest.raises(RuntimeError, match="tlsverify"):
        eng.start(timeout=15)
    cleanup_engine(eng)


def _make_certs(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""

    def run(*args: str) -> None:
        subprocess.run(args, cwd=folder, check=True, capture_output=True)

    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca-key.pem", "-out", "ca.pem", "-subj", "/CN=dyca",
    )  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "ext.cnf"]), ("client", [])):
        run(
            "openssl", "req", "-newkey", "rsa:2048", "-nodes",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        )  # fmt: skip
        run(
            "openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
            "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2",
            "-out", f"{name}.pem", *ext,
        )  # fmt: skip
    (folder / "key.pem").write_bytes((folder / "client-key.pem").read_bytes())
    (folder / "cert.pem").write_bytes((folder / "client.pem").read_bytes())


def test_tcp_tls_requires_client_certificate(scratch_root: Path) -> None:
    need_root()
    certs = scratch_root / "certs"
    certs.mkdir()
    try:
        _make_certs(certs)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"openssl could not make test certificates: {err.stderr!r}")
    port = _free_port()
    eng = make_engine(
        scratch_root / "engine",
        "--host", f"tcp://127.0.0.1:{port}",
        "--tlsverify",
        "--tlscacert", str(certs / "ca.pem"),
        "--tlscert", str(certs / "server.pem"),
        "--tlskey", str(certs / "server-key.pem"),
    )  # fmt: skip
    eng.start()
    try:
        env = eng.env()
        env["DOCKER_HOST"] = f"tcp://127.0.0.1:{port}"
        env["DOCKER_TLS_VERIFY"] = "1"
        env["DOCKER_CERT_PATH"] = str(certs)
        ok = subprocess.run(
            ["docker", "version", "--format", "{{.Server.APIVersion}}"],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ok.stdout.strip() == "1.47", ok.stderr

        # Without a client certificate the handshake is refused.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            with (
                pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls.recv(100):
                    raise ConnectionResetError("closed without an answer")
    finally:
        cleanup_engine(eng)
