"""Published ports through the real docker CLI: the host's loopback
answers for the container (busybox httpd and nc), dockerd's errors for taken
ports and bad specs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.engine import EngineProcess


def _runs(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "echo", "ok")
    if result.returncode != 0 or result.stdout.strip() != "ok":
        pytest.skip(f"docker run does not work yet: {result.stderr.strip()[:200]}")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, attempts: int = 50) -> str:
    """GET ``url``, retrying while the server in the container starts."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


@pytest.fixture
def web(engine: EngineProcess, busybox: str) -> Iterator[list[str]]:
    """Names of containers to remove after the test."""
    _runs(engine, busybox)
    names: list[str] = []
    yield names
    if names:
        engine.docker("rm", "-f", *names)


def _httpd(engine: EngineProcess, busybox: str, name: str, *publish: str) -> None:
    engine.docker(
        "run",
        "-d",
        "--name",
        name,
        *publish,
        busybox,
        "sh",
        "-c",
        "echo hello-from-container > /tmp/index.html; httpd -f -p 80 -h /tmp",
        check=True,
    )


def test_published_tcp_port_answers_on_loopback(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    port = _free_port()
    web.append("pub-web")
    _httpd(engine, busybox, "pub-web", "-p", f"127.0.0.1:{port}:80")
    assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "hello-from-container"
    out = engine.docker("port", "pub-web", check=True).stdout
    assert out.strip() == f"80/tcp -> 127.0.0.1:{port}"
    body = json.loads(engine.docker("inspect", "pub-web", check=True).stdout)[0]
    assert body["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert body["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}
    ]


def test_random_host_port_and_publish_all(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    web.append("rnd-web")
    _httpd(engine, busybox, "rnd-web", "-p", "80", "--expose", "8080", "-P")
    out = engine.docker("port", "rnd-web", "80/tcp", check=True).stdout.splitlines()
    assert out[0].startswith("0.0.0.0:")
    port = int(out[0].rsplit(":", 1)[1])
    assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "hello-from-container"
    body = json.loads(engine.docker("inspect", "rnd-web", check=True).stdout)[0]
    ports = body["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "8080/tcp"}
    assert ports["8080/tcp"] and ports["8080/tcp"][0]["HostPort"] != "0"


UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data.upper(), addr)
"""


def test_published_udp_port(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    """Busybox has no UDP server, so the echo server is the host's Python
    run inside the container's network namespace (its SandboxKey)."""
    port = _free_port(socket.SOCK_DGRAM)
    web.append("udp-echo")
    engine.docker(
        "run",
        "-d",
        "--name",
        "udp-echo",
        "-p",
        f"127.0.0.1:{port}:5353/udp",
        busybox,
        "sleep",
        "60",
        check=True,
    )
    body = json.loads(engine.docker("inspect", "udp-echo", check=True).stdout)[0]
    sandbox = body["NetworkSettings"]["SandboxKey"]
    server = subprocess.Popen(
        ["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"datagram-in", ("127.0.0.1", port))
            assert s.recvfrom(2048)[0] == b"DATAGRAM-IN"
    finally:
        server.kill()
        server.wait()
    out = engine.docker("port", "udp-echo", check=True).stdout.strip()
    assert out == f"5353/udp -> 127.0.0.1:{port}"


def test_taken_host_port_fails_the_start(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        web.append("taken-web")
        result = engine.docker(
            "run",
            "-d",
            "--name",
            "taken-web",
            "-p",
            f"127.0.0.1:{port}:80",
            busybox,
            "sleep",
            "60",
        )
    assert result.returncode != 0
    assert (
        f"Bind for 127.0.0.1:{port} failed: port is already allocated" in result.stderr
    )
    state = json.loads(engine.docker("inspect", "taken-web", check=True).stdout)[0][
        "State"
    ]
    assert not state["Running"]


def test_two_containers_cannot_share_a_host_port(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    port = _free_port()
    web += ["first-web", "second-web"]
    _httpd(engine, busybox, "first-web", "-p", f"127.0.0.1:{port}:80")
    result = engine.docker(
        "run",
        "-d",
        "--name",
        "second-web",
        "-p",
        f"127.0.0.1:{port}:80",
        busybox,
        "sleep",
        "60",
    )
    assert result.returncode != 0 and "port is already allocated" in result.stderr
    assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "hello-from-container"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("abc", "abc"), ("99999:80", "99999"), ("80/xyz", "xyz")],
)
def test_bad_port_specs(
    engine: EngineProcess, busybox: str, spec: str, message: str
) -> None:
    result = engine.docker("create", "-p", spec, busybox, "true")
    assert result.returncode != 0
    assert "invalid" in result.stderr.lower() and message in result.stderr


def test_bad_port_bindings_through_the_api(engine: EngineProcess, busybox: str) -> None:
    body = {
        "Image": busybox,
        "Cmd": ["true"],
        "HostConfig": {
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "70000"}]}
        },
    }
    status, answer = engine.request(
        "POST",
        "/v1.47/containers/create",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and b'invalid port specification: \\"70000\\"' in answer


def test_port_closes_when_the_container_stops(
    engine: EngineProcess, busybox: str, web: list[str]
) -> None:
    port = _free_port()
    web.append("closing-web")
    _httpd(engine, busybox, "closing-web", "-p", f"127.0.0.1:{port}:80")
    _get(f"http://127.0.0.1:{port}/index.html")
    engine.docker("stop", "-t", "1", "closing-web", check=True)
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))


def test_published_port_survives_an_engine_restart(
    fresh_engine: EngineProcess, busybox: str
) -> None:
    """Containers outlive the engine; so must their published ports."""
    _runs(fresh_engine, busybox)
    port = _free_port()
    _httpd(fresh_engine, busybox, "survivor", "-p", f"127.0.0.1:{port}:80")
    assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "hello-from-container"
    fresh_engine.stop()
    fresh_engine.start()
    running = fresh_engine.docker(
        "ps", "--format", "{{.Names}}", check=True
    ).stdout.split()
    if "survivor" not in running:
        pytest.skip("the engine does not adopt running containers yet")
    assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "hello-from-container"
    # A new container must not get the survivor's address.
    survivor = json.loads(
        fresh_engine.docker("inspect", "survivor", check=True).stdout
    )[0]
    out = fresh_engine.docker(
        "run", "--rm", busybox, "ip", "-o", "-4", "addr", "show", "eth0", check=True
    ).stdout
    assert f"inet {survivor['NetworkSettings']['IPAddress']}/" not in out


CGI_ADDR = (
    "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\n"
    "echo\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/addr && chmod +x /www/cgi-bin/addr "
    "&& httpd -f -p 80 -h /www"
)


def _plain(address: str) -> str:
    """busybox httpd writes IPv4 peers as ``[::ffff:a.b.c.d]``."""
    return address.strip().strip("[]").removeprefix("::ffff:")


@pytest.fixture
def remote_client() -> Iterator[tuple[str, str]]:
    """A namespace linked to the host by a veth: a stand-in for another
    machine (or the VM's NIC), since only loopback traffic exists here.

    Yields (namespace name, the host's address on the link).
    """
    tag = f"{os.getpid() % 10000}"
    ns, host_if, peer_if = f"dykc{tag}", f"dykh{tag}", f"dykp{tag}"
    octet = os.getpid() % 200 + 20
    host_ip, client_ip = f"10.201.{octet}.1", f"10.201.{octet}.2"
    commands = [
        ["ip", "netns", "add", ns],
        [
            "ip",
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            peer_if,
            "netns",
            ns,
        ],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "-n", ns, "addr", "add", f"{client_ip}/30", "dev", peer_if],
        ["ip", "-n", ns, "link", "set", peer_if, "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield ns, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_published_port_is_dnated_for_outside_clients(
    engine: EngineProcess,
    busybox: str,
    web: list[str],
    remote_client: tuple[str, str],
) -> None:
    """From outside the kernel forwards straight to the container (it sees
    the client's own address); from the host's loopback the engine's proxy
    answers (the container sees the bridge's gateway)."""
    ns, host_ip = remote_client
    port = _free_port()
    web.append("dnat-web")
    engine.docker(
        "run",
        "-d",
        "--name",
        "dnat-web",
        "-p",
        f"{port}:80",
        busybox,
        "sh",
        "-c",
        CGI_ADDR,
        check=True,
    )
    body = json.loads(engine.docker("inspect", "dnat-web", check=True).stdout)[0]
    gateway = body["NetworkSettings"]["Gateway"]
    assert _plain(_get(f"http://127.0.0.1:{port}/cgi-bin/addr")) == gateway
    fetch = (
        "import urllib.request, sys; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    outside = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            fetch,
            f"http://{host_ip}:{port}/cgi-bin/addr",
        ],
        capture_output=True,
        text=True,
    )
    assert outside.returncode == 0, outside.stderr
    assert _plain(outside.stdout) == host_ip.rsplit(".", 1)[0] + ".2"
    engine.docker("rm", "-f", "dnat-web", check=True)
    bridge = json.loads(
        engine.docker("network", "inspect", "bridge", check=True).stdout
    )[0]
    table = "dockyard_" + bridge["Options"]["com.docker.network.bridge.name"]
    listed = subprocess.run(
        ["nft", "list", "map", "inet", table, "published"],
        capture_output=True,
        text=True,
    )
    assert f" . {port} :" not in listed.stdout
