"""The network layers on their own: IPAM, port specs, /etc files, nft
rules, and (as root) real namespaces, veths, bridges and port proxies that
each test creates and removes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import socket
import subprocess
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config
from engine.errors import Conflict, EngineError, InvalidParameter, NotFound, Unsupported
from engine.events import EventBus
from engine.network import bridge, etcfiles, ipam, nat, netns, portproxy, ports
from engine.network.manager import NetworkManager

_numbers = itertools.count(60)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, veths and bridges")


# -- pure layers --


def test_pool_allocates_round_and_refuses_taken() -> None:
    pool = ipam.Pool(ipaddress.IPv4Network("10.9.0.0/29"))
    assert str(pool.gateway) == "10.9.0.1"
    got = [str(pool.allocate()) for _ in range(5)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(Conflict):
        pool.allocate()
    pool.release("10.9.0.3")
    assert str(pool.allocate()) == "10.9.0.3"
    pool.release("10.9.0.4")
    with pytest.raises(Conflict, match="already in use"):
        pool.allocate("10.9.0.5")
    with pytest.raises(InvalidParameter):
        pool.allocate("10.10.0.5")
    assert str(pool.allocate("10.9.0.4")) == "10.9.0.4"


def test_pool_does_not_reuse_a_released_address_at_once() -> None:
    pool = ipam.Pool(ipaddress.IPv4Network("10.9.0.0/24"))
    first = pool.allocate()
    pool.release(first)
    assert pool.allocate() != first


def test_pick_subnet_skips_overlaps() -> None:
    taken = [
        ipaddress.IPv4Network("172.17.0.0/16"),
        ipaddress.IPv4Network("172.18.5.0/24"),
    ]
    assert str(ipam.pick_subnet(taken)) == "172.19.0.0/16"


def test_ipv6_subnet_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="IPv6"):
        ipam.parse_subnet("fd00::/64")


def test_port_bindings_parse() -> None:
    host_config = {
        "PortBindings": {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "", "HostPort": ""}],
            "9000": [{"HostPort": "9000-9005"}],
        },
        "PublishAllPorts": True,
    }
    config: dict[str, Any] = {"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}}
    got = {
        (b.key, b.host_ip, b.host_port_low, b.host_port_high)
        for b in ports.planned_bindings(host_config, config)
    }
    assert got == {
        ("80/tcp", "127.0.0.1", 8080, 8080),
        ("53/udp", "", 0, 0),
        ("9000/tcp", "", 9000, 9005),
        ("443/tcp", "", 0, 0),
    }
    assert ports.exposed_keys(host_config, config) == [
        "53/udp",
        "80/tcp",
        "443/tcp",
        "9000/tcp",
    ]


@pytest.mark.parametrize(
    ("bindings", "message"),
    [
        ({"abc/tcp": [{}]}, 'invalid port specification: "abc"'),
        ({"80/tcp": [{"HostPort": "99999"}]}, 'invalid port specification: "99999"'),
        ({"80/xyz": [{}]}, "invalid proto: xyz"),
        (
            {"80/tcp": [{"HostIp": "not-an-ip", "HostPort": "1"}]},
            "invalid host IP address",
        ),
        ({"80/tcp": [{"HostPort": "90-80"}]}, 'invalid port specification: "90-80"'),
    ],
)
def test_bad_port_bindings(bindings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        ports.planned_bindings({"PortBindings": bindings}, {})


def test_sctp_publishing_is_refused_clearly() -> None:
    with pytest.raises(Unsupported, match="sctp"):
        ports.planned_bindings({"PortBindings": {"80/sctp": [{}]}}, {})


def test_hosts_file_lines() -> None:
    lines = etcfiles.hosts_lines(
        "172.30.0.5",
        "web",
        "example.org",
        ["db:10.0.0.9", "gw:host-gateway"],
        "172.30.0.1",
    )
    text = etcfiles.render_hosts(lines, ["172.30.0.6\tpeer"])
    assert text.startswith(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    assert "10.0.0.9\tdb\n" in text
    assert "172.30.0.1\tgw\n" in text
    assert "172.30.0.5\tweb.example.org web\n" in text
    assert text.endswith("172.30.0.6\tpeer\n")


def test_extra_host_must_have_an_address() -> None:
    with pytest.raises(ValueError):
        etcfiles.split_extra_host("nohost")
    with pytest.raises(ValueError):
        etcfiles.split_extra_host("name:not-an-ip")
    assert etcfiles.split_extra_host("v6:[::1]") == ("v6", "::1")


def test_resolv_conf_drops_loopback_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nsearch corp.example\noptions edns0\n")
    monkeypatch.setattr(etcfiles, "HOST_RESOLV", host)
    monkeypatch.setattr(etcfiles, "RESOLVED_RESOLV", tmp_path / "absent")
    text = etcfiles.resolv_conf([], [], [], keep_loopback=False)
    assert "nameserver 8.8.8.8" in text and "127.0.0.53" not in text
    assert "search corp.example" in text and "options edns0" in text
    assert "nameserver 127.0.0.53" in etcfiles.resolv_conf(
        [], [], [], keep_loopback=True
    )
    custom = etcfiles.resolv_conf(["1.1.1.1"], ["."], ["ndots:2"], keep_loopback=False)
    assert (
        "nameserver 1.1.1.1" in custom
        and "search" not in custom
        and "ndots:2" in custom
    )


def test_rewrite_keeps_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("a long first version of the file\n")
    inode = path.stat().st_ino
    etcfiles.rewrite(path, "short\n")
    assert path.read_text() == "short\n" and path.stat().st_ino == inode


def test_nft_rules_stay_in_their_own_table() -> None:
    text = nat.render(
        "dockyard_x",
        [
            nat.BridgeRule("dyx0", "10.1.0.0/24"),
            nat.BridgeRule("br-i", "10.2.0.0/24", internal=True),
        ],
    )
    assert nat.table_name("dockyard0") == "dockyard"
    assert nat.table_name("dyt12") == "dockyard_dyt12"
    tables = set(re.findall(r"table (\w+) (\w+)", text))
    assert tables == {("inet", "dockyard_x")}
    assert 'ip saddr 10.1.0.0/24 oifname != "dyx0" masquerade' in text
    assert "10.2.0.0/24" not in text  # internal: no NAT
    assert 'iifname "br-i" oifname != "br-i" drop' in text


# -- kernel layers (root) --


@pytest.fixture
def ns_path() -> Iterator[Path]:
    need_root()
    root = Path(tempfile.mkdtemp(prefix="dynet-"))
    path = root / "netns" / "test"
    try:
        yield path
    finally:
        netns.remove(path)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _in_thread(func: Any, *args: Any) -> Any:
    """Run ``func`` on a fresh thread: namespace switches are per thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = func(*args)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_netns_is_pinned_and_removed(ns_path: Path) -> None:
    def make() -> set[str]:
        with netns.created(ns_path):
            bridge.loopback_up()
            return bridge.interface_names()

    assert _in_thread(make) == {"lo"}
    assert netns.is_pinned(ns_path)
    # The thread went back: the host still sees its own links.
    assert "lo" in _in_thread(lambda: bridge.interface_names())
    assert len(_in_thread(lambda: bridge.interface_names())) >= 1
    netns.remove(ns_path)
    assert not ns_path.exists() and not netns.is_pinned(ns_path)


def test_veth_into_bridge_reaches_gateway(ns_path: Path) -> None:
    number = next(_numbers)
    name = f"dyu{number}"
    links = _in_thread(bridge.Links)
    try:
        master = _in_thread(links.ensure_bridge, name, f"172.28.{number}.1/24")
        # Reusing an existing bridge keeps it and its address.
        assert _in_thread(links.ensure_bridge, name, f"172.28.{number}.1/24") == master

        def make() -> None:
            with netns.created(ns_path):
                bridge.loopback_up()
            links.add_veth(
                f"vethu{number}", "eth0", ns_path, master, "02:42:ac:1c:00:02"
            )
            with netns.inside(ns_path):
                bridge.configure_endpoint(
                    "eth0", f"172.28.{number}.2", 24, f"172.28.{number}.1"
                )

        _in_thread(make)
        ping = subprocess.run(
            [
                "nsenter",
                f"--net={ns_path}",
                "busybox",
                "ping",
                "-c1",
                "-W2",
                f"172.28.{number}.1",
            ],
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        _in_thread(links.delete, f"vethu{number}")
        _in_thread(links.delete, name)
        _in_thread(links.close)
    assert (
        name
        not in subprocess.run(
            ["ip", "-br", "link"], capture_output=True, text=True
        ).stdout
    )


def _echo_server(sock: socket.socket) -> None:
    conn, _ = sock.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def test_tcp_proxy_moves_bytes_both_ways_and_half_closes() -> None:
    async def scenario() -> bytes:
        backend = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=_echo_server, args=(backend,), daemon=True).start()
        listener = portproxy.bind("tcp", "127.0.0.1", 0)
        proxy = portproxy.TcpProxy(listener, backend.getsockname()[:2])
        proxy.start()
        port = listener.getsockname()[1]
        payload = os.urandom(3 * 1024 * 1024)

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as s:

                def send() -> None:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)

                sender = threading.Thread(target=send)
                sender.start()
                chunks = []
                while data := s.recv(1 << 20):
                    chunks.append(data)
                sender.join()
                return b"".join(chunks)

        try:
            got = await asyncio.to_thread(client)
        finally:
            proxy.close()
            backend.close()
        assert got == payload
        return got

    asyncio.run(scenario())


def test_udp_proxy_answers_the_client() -> None:
    async def scenario() -> None:
        backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        backend.bind(("127.0.0.1", 0))

        def echo() -> None:
            data, addr = backend.recvfrom(2048)
            backend.sendto(data.upper(), addr)

        threading.Thread(target=echo, daemon=True).start()
        listener = portproxy.bind("udp", "127.0.0.1", 0)
        proxy = portproxy.UdpProxy(listener, backend.getsockname()[:2])
        proxy.start()

        def client() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(b"ping", listener.getsockname())
                return s.recvfrom(2048)[0]

        try:
            assert await asyncio.to_thread(client) == b"PING"
        finally:
            proxy.close()
            backend.close()

    asyncio.run(scenario())


def test_bind_reports_a_taken_port() -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(portproxy.PortInUse):
            portproxy.bind("tcp", "127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# -- the manager against the kernel, with a stand-in for the container manager --


class _Container:
    def __init__(
        self, cid: str, name: str, host_config: dict[str, Any], directory: Path
    ) -> None:
        self.id = cid
        self.name = name
        self.host_config = host_config
        self.config: dict[str, Any] = {"ExposedPorts": {"80/tcp": {}}}
        self.dir = directory
        self.state = {"Running": True}
        self.network_settings: dict[str, Any] | None = None


@contextlib.contextmanager
def _managed(
    wait: bool = True,
) -> Iterator[tuple[NetworkManager, Path, asyncio.AbstractEventLoop]]:
    """A started NetworkManager on its own bridge, its root and its loop.

    ``wait``: return once the bridges are up (``ready()``), not as soon as
    ``start()`` has handed that to the background.
    """
    number = next(_numbers)
    root = Path(tempfile.mkdtemp(prefix="dynetm-"))
    config = Config(
        data_root=root / "data",
        exec_root=root / "run",
        bridge_ip=f"172.28.{number}.1/24",
        bridge_name=f"dyu{number}",
    )

    def no_container(name: str) -> None:
        raise NotFound(f"No such container: {name}")

    containers = types.SimpleNamespace(get=no_container)
    daemon = types.SimpleNamespace(
        config=config, events=EventBus(), containers=containers
    )
    loop = asyncio.new_event_loop()
    nm = NetworkManager(daemon)
    loop.run_until_complete(nm.start())
    if wait:
        loop.run_until_complete(nm.ready())
    try:
        yield nm, root, loop
    finally:
        for cid in list(nm.sandboxes):
            stub = _Container(cid, "", {}, root)
            loop.run_until_complete(nm.teardown(stub))
        loop.run_until_complete(nm.stop())
        loop.close()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"dyu{number}" not in links
    tables = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True
    ).stdout
    assert f"dockyard_dyu{number}" not in tables


@pytest.fixture
def manager() -> Iterator[tuple[NetworkManager, Path]]:
    need_root()
    with _managed() as (nm, root, _):
        yield nm, root


def test_operations_wait_for_the_background_bring_up() -> None:
    need_root()
    with _managed(wait=False) as (nm, root, loop):
        # start() returned before the kernel side is up: the engine answers
        # meanwhile, and a container's setup waits for the bridge.
        assert nm.links is None
        c = _Container("d" * 64, "/early", {"NetworkMode": "default"}, root / "c")
        nm.validate(c.host_config, c.config)
        c.network_settings = nm.initial_settings(c.host_config)
        path = loop.run_until_complete(nm.setup(c))
        assert nm.links is not None
        assert path is not None and netns.is_pinned(Path(path))
        loop.run_until_complete(nm.teardown(c))


def test_manager_sandbox_lifecycle(manager: tuple[NetworkManager, Path]) -> None:
    nm, root = manager
    loop = asyncio.new_event_loop()
    try:
        c = _Container("c" * 64, "/web", {"NetworkMode": "default"}, root / "c1")
        nm.validate(c.host_config, c.config)
        c.network_settings = nm.initial_settings(c.host_config)
        assert set(c.network_settings["Networks"]) == {"bridge"}
        path = loop.run_until_complete(nm.setup(c))
        assert path is not None and netns.is_pinned(Path(path))
        settings = c.network_settings
        assert settings["IPAddress"].startswith(
            nm.get("bridge").subnet.rsplit(".", 1)[0]
        )
        assert settings["Networks"]["bridge"]["Gateway"] == nm.get("bridge").gateway
        files = nm.write_etc_files(c)
        assert f"{settings['IPAddress']}\t{'c' * 12}" in files["/etc/hosts"].read_text()
        assert files["/etc/hostname"].read_text() == "c" * 12 + "\n"
        inspect = nm.inspect(nm.get("bridge"))
        assert inspect["Containers"][c.id]["Name"] == "web"
        loop.run_until_complete(nm.teardown(c))
        assert not Path(path).exists()
        assert c.network_settings["IPAddress"] == ""
        loop.run_until_complete(nm.teardown(c))  # idempotent
    finally:
        loop.close()


def test_manager_rejects_unknown_network_and_bad_dns(
    manager: tuple[NetworkManager, Path],
) -> None:
    nm, _ = manager
    with pytest.raises(InvalidParameter, match="network nope not found"):
        nm.validate({"NetworkMode": "nope"}, {})
    with pytest.raises(InvalidParameter, match="is not an ip address"):
        nm.validate({"Dns": ["dns.example"]}, {})
    with pytest.raises(InvalidParameter, match="No such container: ghost"):
        nm.validate({"NetworkMode": "container:ghost"}, {})


def test_manager_user_network_create_and_remove(
    manager: tuple[NetworkManager, Path],
) -> None:
    nm, _ = manager
    loop = asyncio.new_event_loop()
    try:
        number = next(_numbers)
        net = loop.run_until_complete(
            nm.create_network(
                {
                    "Name": "u1",
                    "IPAM": {"Config": [{"Subnet": f"172.27.{number}.0/24"}]},
                    "Labels": {"a": "b"},
                }
            )
        )
        assert net.gateway == f"172.27.{number}.1"
        assert (
            net.bridge
            in subprocess.run(
                ["ip", "-br", "link"], capture_output=True, text=True
            ).stdout
        )
        with pytest.raises(Conflict, match="already exists"):
            loop.run_until_complete(nm.create_network({"Name": "u1"}))
        with pytest.raises(EngineError, match="overlaps"):
            loop.run_until_complete(
                nm.create_network(
                    {
                        "Name": "u2",
                        "IPAM": {"Config": [{"Subnet": f"172.27.{number}.128/25"}]},
                    }
                )
            )
        with pytest.raises(Unsupported, match="overlay"):
            loop.run_until_complete(
                nm.create_network({"Name": "o", "Driver": "overlay"})
            )
        assert [n.name for n in nm.list_networks({"label": ["a=b"]})] == ["u1"]
        assert [n.name for n in nm.list_networks({"type": ["builtin"]})] == [
            "bridge",
            "host",
            "none",
        ]
        with pytest.raises(EngineError, match="pre-defined"):
            loop.run_until_complete(nm.remove_network("bridge"))
        loop.run_until_complete(nm.remove_network("u1"))
        assert (
            net.bridge
            not in subprocess.run(
                ["ip", "-br", "link"], capture_output=True, text=True
            ).stdout
        )
    finally:
        loop.close()


def test_remove_host_state_after_a_killed_engine(
    manager: tuple[NetworkManager, Path],
) -> None:
    """What a SIGKILLed engine leaves (bridges, netns, nft table) goes."""
    from engine.network.cleanup import remove_host_state

    nm, root = manager
    loop = asyncio.new_event_loop()
    try:
        net = loop.run_until_complete(nm.create_network({"Name": "left"}))
        c = _Container("d" * 64, "/left", {"NetworkMode": "left"}, root / "c2")
        c.network_settings = nm.initial_settings(c.host_config)
        path = loop.run_until_complete(nm.setup(c))
        assert path is not None
    finally:
        loop.close()
    config = nm.config
    remove_host_state(config.data_root, config.exec_root, config.bridge_name)
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert net.bridge not in links and config.bridge_name not in links
    assert not netns.is_pinned(Path(path))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert nat.table_name(config.bridge_name) not in tables.stdout


def test_manager_none_mode_keeps_its_network_entry(
    manager: tuple[NetworkManager, Path],
) -> None:
    nm, root = manager
    loop = asyncio.new_event_loop()
    try:
        c = _Container("e" * 64, "/alone", {"NetworkMode": "none"}, root / "c3")
        c.network_settings = nm.initial_settings(c.host_config)
        path = loop.run_until_complete(nm.setup(c))
        assert path is not None
        names = _in_thread(lambda: _names_in(Path(path)))
        assert names == {"lo"}
        assert set(c.network_settings["Networks"]) == {"none"}
        assert c.network_settings["IPAddress"] == ""
        loop.run_until_complete(nm.teardown(c))
    finally:
        loop.close()


def _names_in(path: Path) -> set[str]:
    with netns.inside(path):
        return bridge.interface_names()
