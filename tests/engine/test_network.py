"""Networks through the real docker CLI: ls/create/inspect/rm/prune, and
containers on the default bridge, user networks, host and none."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from tests.support.engine import EngineProcess


def _runs(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "echo", "ok")
    if result.returncode != 0 or result.stdout.strip() != "ok":
        pytest.skip(f"docker run does not work yet: {result.stderr.strip()[:200]}")


def _bridge_subnet(engine: EngineProcess) -> ipaddress.IPv4Network:
    body = json.loads(engine.docker("network", "inspect", "bridge", check=True).stdout)[
        0
    ]
    return ipaddress.IPv4Network(body["IPAM"]["Config"][0]["Subnet"])


def test_builtin_networks_are_listed(engine: EngineProcess) -> None:
    out = engine.docker(
        "network", "ls", "--format", "{{.Name}} {{.Driver}}", check=True
    )
    assert set(out.stdout.splitlines()) >= {"bridge bridge", "host host", "none null"}
    body = json.loads(engine.docker("network", "inspect", "bridge", check=True).stdout)[
        0
    ]
    assert body["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    bridge_name = body["Options"]["com.docker.network.bridge.name"]
    links = subprocess.run(
        ["ip", "-br", "addr", "show", bridge_name], capture_output=True, text=True
    )
    assert body["IPAM"]["Config"][0]["Gateway"] in links.stdout


def test_create_inspect_rm_network(engine: EngineProcess) -> None:
    net_id = engine.docker(
        "network",
        "create",
        "--subnet",
        "172.26.77.0/24",
        "--label",
        "team=net",
        "cli-n1",
        check=True,
    ).stdout.strip()
    try:
        body = json.loads(
            engine.docker("network", "inspect", "cli-n1", check=True).stdout
        )[0]
        assert body["Id"] == net_id and body["Driver"] == "bridge"
        assert body["IPAM"]["Config"] == [
            {"Subnet": "172.26.77.0/24", "Gateway": "172.26.77.1"}
        ]
        assert body["Labels"] == {"team": "net"}
        links = subprocess.run(
            ["ip", "-br", "addr"], capture_output=True, text=True
        ).stdout
        assert "172.26.77.1/24" in links
        dup = engine.docker("network", "create", "cli-n1")
        assert dup.returncode != 0 and "already exists" in dup.stderr
        listed = engine.docker(
            "network", "ls", "-q", "--filter", "label=team=net", check=True
        )
        assert listed.stdout.split() == [net_id[:12]]
    finally:
        engine.docker("network", "rm", "cli-n1", check=True)
    assert (
        "172.26.77.1/24"
        not in subprocess.run(
            ["ip", "-br", "addr"], capture_output=True, text=True
        ).stdout
    )
    missing = engine.docker("network", "inspect", "cli-n1")
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_network_errors(engine: EngineProcess) -> None:
    result = engine.docker("network", "create", "-d", "overlay", "ov1")
    assert result.returncode != 0 and "overlay" in result.stderr
    result = engine.docker("network", "rm", "bridge")
    assert result.returncode != 0 and "pre-defined network" in result.stderr
    result = engine.docker("network", "create", "host")
    assert result.returncode != 0
    result = engine.docker("network", "rm", "no-such-net")
    assert result.returncode != 0 and "not found" in result.stderr


def test_network_prune(engine: EngineProcess) -> None:
    engine.docker("network", "create", "prune-n1", check=True)
    out = engine.docker("network", "prune", "-f", check=True).stdout
    assert "prune-n1" in out
    names = engine.docker(
        "network", "ls", "--format", "{{.Name}}", check=True
    ).stdout.split()
    assert "prune-n1" not in names and "bridge" in names


def test_default_bridge_gives_an_address_and_reaches_the_gateway(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    subnet = _bridge_subnet(engine)
    gateway = str(subnet.network_address + 1)
    out = engine.docker(
        "run",
        "--rm",
        busybox,
        "sh",
        "-c",
        f"ip -o -4 addr show eth0; ping -c1 -W2 {gateway} >/dev/null && echo reached",
        check=True,
    ).stdout
    address = out.split("inet ")[1].split("/")[0]
    assert ipaddress.IPv4Address(address) in subnet
    assert "reached" in out


def test_container_files_and_inspect(engine: EngineProcess, busybox: str) -> None:
    _runs(engine, busybox)
    engine.docker(
        "run",
        "-d",
        "--name",
        "netfiles",
        "--hostname",
        "box1",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "--dns",
        "9.9.9.9",
        busybox,
        "sleep",
        "60",
        check=True,
    )
    try:
        hosts = engine.docker(
            "exec", "netfiles", "cat", "/etc/hosts", check=True
        ).stdout
        body = json.loads(engine.docker("inspect", "netfiles", check=True).stdout)[0]
        settings = body["NetworkSettings"]
        address = settings["Networks"]["bridge"]["IPAddress"]
        assert settings["IPAddress"] == address and address
        assert f"{address}\tbox1" in hosts
        assert "10.1.2.3\tdb.local" in hosts
        assert f"{settings['Gateway']}\tgw" in hosts
        resolv = engine.docker(
            "exec", "netfiles", "cat", "/etc/resolv.conf", check=True
        ).stdout
        assert "nameserver 9.9.9.9" in resolv
        assert settings["SandboxKey"]
    finally:
        engine.docker("rm", "-f", "netfiles")


def test_network_none_has_only_loopback(engine: EngineProcess, busybox: str) -> None:
    _runs(engine, busybox)
    out = engine.docker(
        "run", "--rm", "--network", "none", busybox, "ip", "-o", "link", check=True
    ).stdout
    names = [line.split(":")[1].strip() for line in out.splitlines()]
    assert names == ["lo"]


def test_network_host_sees_host_interfaces(engine: EngineProcess, busybox: str) -> None:
    _runs(engine, busybox)
    out = engine.docker(
        "run", "--rm", "--network", "host", busybox, "ip", "-o", "link", check=True
    ).stdout
    host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    bridge = json.loads(
        engine.docker("network", "inspect", "bridge", check=True).stdout
    )[0]
    name = bridge["Options"]["com.docker.network.bridge.name"]
    assert f" {name}:" in out and f" {name}:" in host


def test_user_network_peers_reach_each_other(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker("network", "create", "peers1", check=True)
    try:
        engine.docker(
            "run",
            "-d",
            "--name",
            "peer-a",
            "--network",
            "peers1",
            busybox,
            "sleep",
            "60",
            check=True,
        )
        body = json.loads(engine.docker("inspect", "peer-a", check=True).stdout)[0]
        address = body["NetworkSettings"]["Networks"]["peers1"]["IPAddress"]
        assert address
        out = engine.docker(
            "run",
            "--rm",
            "--network",
            "peers1",
            busybox,
            "sh",
            "-c",
            f"ping -c1 -W2 {address} >/dev/null && echo by-ip; ping -c1 -W2 peer-a >/dev/null && echo by-name",
            check=True,
        ).stdout
        assert "by-ip" in out and "by-name" in out
        busy = engine.docker("network", "rm", "peers1")
        assert busy.returncode != 0 and "active endpoints" in busy.stderr
        net = json.loads(
            engine.docker("network", "inspect", "peers1", check=True).stdout
        )[0]
        assert [c["Name"] for c in net["Containers"].values()] == ["peer-a"]
    finally:
        engine.docker("rm", "-f", "peer-a")
        engine.docker("network", "rm", "peers1")


def test_connect_and_disconnect_a_running_container(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker("network", "create", "extra1", check=True)
    try:
        engine.docker(
            "run", "-d", "--name", "multi", busybox, "sleep", "60", check=True
        )
        engine.docker("network", "connect", "extra1", "multi", check=True)
        links = engine.docker(
            "exec", "multi", "ip", "-o", "-4", "addr", check=True
        ).stdout
        body = json.loads(engine.docker("inspect", "multi", check=True).stdout)[0]
        extra = body["NetworkSettings"]["Networks"]["extra1"]["IPAddress"]
        assert extra and f"eth1    inet {extra}/" in links.replace("\\", "")
        again = engine.docker("network", "connect", "extra1", "multi")
        assert again.returncode != 0 and "already exists" in again.stderr
        engine.docker("network", "disconnect", "extra1", "multi", check=True)
        links = engine.docker("exec", "multi", "ip", "-o", "link", check=True).stdout
        assert "eth1" not in links
    finally:
        engine.docker("rm", "-f", "multi")
        engine.docker("network", "rm", "extra1")


def test_unknown_network_fails_at_create(engine: EngineProcess, busybox: str) -> None:
    result = engine.docker("create", "--network", "no-such-net", busybox, "true")
    assert result.returncode != 0 and "network no-such-net not found" in result.stderr


def test_connect_before_start_attaches_at_start(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker("network", "create", "later1", check=True)
    try:
        engine.docker("create", "--name", "twonets", busybox, "sleep", "60", check=True)
        engine.docker(
            "network", "connect", "--alias", "second", "later1", "twonets", check=True
        )
        engine.docker("start", "twonets", check=True)
        links = engine.docker("exec", "twonets", "ip", "-o", "link", check=True).stdout
        assert "eth0" in links and "eth1" in links
        body = json.loads(engine.docker("inspect", "twonets", check=True).stdout)[0]
        networks = body["NetworkSettings"]["Networks"]
        assert set(networks) == {"bridge", "later1"}
        assert "second" in networks["later1"]["DNSNames"]
    finally:
        engine.docker("rm", "-f", "twonets")
        engine.docker("network", "rm", "later1")


def test_nat_table_is_the_engines_own(engine: EngineProcess) -> None:
    body = json.loads(engine.docker("network", "inspect", "bridge", check=True).stdout)[
        0
    ]
    name = body["Options"]["com.docker.network.bridge.name"]
    subnet = body["IPAM"]["Config"][0]["Subnet"]
    table = subprocess.run(
        ["nft", "list", "table", "inet", f"dockyard_{name}"],
        capture_output=True,
        text=True,
    )
    assert table.returncode == 0, table.stderr
    assert f'ip saddr {subnet} oifname != "{name}" masquerade' in table.stdout
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"


def test_network_container_mode_shares_the_namespace(
    engine: EngineProcess, busybox: str
) -> None:
    _runs(engine, busybox)
    engine.docker("run", "-d", "--name", "ns-owner", busybox, "sleep", "60", check=True)
    try:
        body = json.loads(engine.docker("inspect", "ns-owner", check=True).stdout)[0]
        address = body["NetworkSettings"]["IPAddress"]
        out = engine.docker(
            "run",
            "--rm",
            "--network",
            "container:ns-owner",
            busybox,
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
            check=True,
        ).stdout
        assert f"inet {address}/" in out
        bad = engine.docker(
            "create", "--network", "container:ns-owner", "-p", "80", busybox
        )
        assert bad.returncode != 0 and "conflicting options" in bad.stderr
    finally:
        engine.docker("rm", "-f", "ns-owner")
