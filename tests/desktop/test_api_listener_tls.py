"""The TLS listener for real: the docker CLI through it to a real engine.

The proxy each test gives the listener is the forwarder's own ``splice``,
with a connection to the engine's unix socket standing in for the SSH
channel to the guest, so these tests cross the same byte relay a machine
uses.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from desktop.machine import api_listener
from desktop.machine.api_listener_tls import TLSListener, ensure_certificates
from tests.support.engine import EngineProcess
from tests.support.listeners import engine_proxy, serving

DOCKER = "/usr/local/bin/docker"


@pytest.fixture
def tls_listener(engine: EngineProcess, tmp_path: Path) -> Iterator[TLSListener]:
    with serving(
        TLSListener(tmp_path / "tls", "test", engine_proxy(engine))
    ) as listener:
        yield listener


def docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=120
    )


def cli_env(tmp_path: Path, endpoint: api_listener.Endpoint) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    env.update(endpoint.env())
    return env


def test_certificates_are_private_and_signed_for_loopback(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", "dev")
    for path in files.all():
        assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    assert not list((tmp_path / "tls").rglob("*ca-key*"))

    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "127.0.0.1" in [
        str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)
    ]

    # A second call keeps them; a missing file makes a whole new set.
    before = files.ca.read_bytes()
    assert ensure_certificates(tmp_path / "tls", "dev").ca.read_bytes() == before
    files.client_key.unlink()
    ensure_certificates(tmp_path / "tls", "dev")
    assert files.ca.read_bytes() != before


@pytest.mark.root
def test_docker_cli_through_tls(tls_listener: TLSListener, tmp_path: Path) -> None:
    endpoint = api_listener.endpoint_of(tls_listener)
    assert endpoint.host == f"tcp://127.0.0.1:{tls_listener.port}"
    env = cli_env(tmp_path, endpoint)

    version = docker(env, "version", "--format", "{{.Server.Os}}")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "linux"

    # attach is a hijacked stream: it needs the half-closes to pass through.
    run = docker(env, "run", "--rm", "dockyard-test/busybox", "echo", "hi")
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hi\n"


@pytest.mark.root
def test_stdin_reaches_the_container_and_eof_ends_it(
    tls_listener: TLSListener, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, api_listener.endpoint_of(tls_listener))
    proc = subprocess.run(
        [DOCKER, "run", "--rm", "-i", "dockyard-test/busybox", "wc", "-c"],
        env=env,
        input="x" * 300_000,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "300000"


@pytest.mark.root
def test_a_client_without_the_machines_certificate_is_refused(
    tls_listener: TLSListener, tmp_path: Path
) -> None:
    files = tls_listener.files

    def ping(ctx: ssl.SSLContext) -> bytes:
        with socket.create_connection(("127.0.0.1", tls_listener.port), 10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                    return tls.recv(4096)
            except (ssl.SSLError, ConnectionError):
                return b""

    no_cert = ssl.create_default_context(cafile=str(files.ca))
    assert ping(no_cert) == b""

    other = ensure_certificates(tmp_path / "other", "other")
    foreign = ssl.create_default_context(cafile=str(files.ca))
    foreign.load_cert_chain(other.client_cert, other.client_key)
    assert ping(foreign) == b""

    good = ssl.create_default_context(cafile=str(files.ca))
    good.load_cert_chain(files.client_cert, files.client_key)
    assert ping(good).startswith(b"HTTP/1.1 200 OK")

    # The real CLI without a certificate gets no answer either.
    env = cli_env(tmp_path, api_listener.endpoint_of(tls_listener))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "ca.pem").write_bytes(files.ca.read_bytes())
    env.pop("DOCKER_TLS_VERIFY")
    env["DOCKER_TLS"] = "1"
    env["DOCKER_CERT_PATH"] = str(bare)
    refused = docker(env, "version", "--format", "{{.Server.Os}}")
    assert refused.returncode != 0
    assert "linux" not in refused.stdout


def test_a_taken_port_falls_back_to_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        listener = TLSListener(tmp_path / "tls", "t", lambda c: c.close(), port=port)
        try:
            assert listener.port not in (0, port)
        finally:
            listener.close()


@pytest.mark.root
def test_ping_through_each_endpoint(
    tls_listener: TLSListener, engine: EngineProcess, tmp_path: Path
) -> None:
    assert api_listener.ping(api_listener.endpoint_of(tls_listener))
    assert api_listener.ping(api_listener.Endpoint("unix", engine.host))
    # Without the client files the TLS endpoint cannot be pinged.
    bare = api_listener.Endpoint("tls", api_listener.endpoint_of(tls_listener).host)
    assert not api_listener.ping(bare)
    assert not api_listener.ping(
        api_listener.Endpoint("unix", f"unix://{tmp_path}/nothing.sock")
    )


@pytest.mark.root
def test_a_large_download_arrives_whole(
    tls_listener: TLSListener, engine: EngineProcess, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, api_listener.endpoint_of(tls_listener))
    via_tls = subprocess.run(
        [DOCKER, "save", "dockyard-test/busybox"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert via_tls.returncode == 0, via_tls.stderr
    direct = subprocess.run(
        [DOCKER, "save", "dockyard-test/busybox"],
        env=engine.env(),
        capture_output=True,
        timeout=120,
    )
    assert len(via_tls.stdout) > 1_000_000
    assert via_tls.stdout == direct.stdout
