"""Networks: the default bridge, user networks, sandboxes, published ports.

A *network* is what ``docker network ls`` lists: the default ``bridge``
(the Linux bridge ``--bridge-name`` holding ``--bip``), ``host``, ``none``
and user-defined bridge networks (a bridge ``br-<id>`` each). A container's
*sandbox* is its network namespace with one *endpoint* per network it is
attached to: a veth pair, an address from the network's pool, a MAC
derived from that address. The container manager drives a sandbox through
its life::

    netns_path = await networks.setup(container)     # before the runtime
    files = networks.write_etc_files(container)      # hosts, resolv.conf
    await networks.publish(container)                # after start: -p ports
    await networks.teardown(container)               # after exit

Sandboxes outlive the engine like containers do: their state is kept in
``exec_root/network/<container id>.json``; at start the pools are refilled
from it and ``restore`` reopens the port proxies of running containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.component import Component
from engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    InvalidParameter,
    NotFound,
    Unsupported,
)
from engine.network import bridge, etcfiles, netns, portproxy
from engine.network.ipam import Pool, parse_address, parse_subnet, pick_subnet
from engine.network.nat import BridgeRule, Firewall, Forward, enable_forwarding
from engine.network.ports import Binding, exposed_keys, planned_bindings

log = logging.getLogger(__name__)

T = TypeVar("T")

BUILTIN = ("bridge", "host", "none")
DEFAULT_MTU = 1500


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _new_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Network:
    id: str
    name: str
    driver: str  # bridge, host or null
    created: str
    bridge: str = ""
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    masquerade: bool = True
    mtu: int = DEFAULT_MTU
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    # None when the create body had no IPAM.Options: dockerd echoes what
    # it was given, null for docker-py's bare create, {} for the CLI's.
    ipam_options: dict[str, str] | None = None
    default: bool = False  # the default bridge

    def __post_init__(self) -> None:
        self.pool: Pool | None = None

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN

    @property
    def user_defined(self) -> bool:
        return self.driver == "bridge" and not self.default

    def make_pool(self) -> Pool:
        self.pool = Pool(
            parse_subnet(self.subnet),
            parse_address(self.gateway, "gateway") if self.gateway else None,
            parse_subnet(self.ip_range) if self.ip_range else None,
        )
        return self.pool

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Network:
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def inspect(self, containers: dict[str, Any] | None = None) -> dict[str, Any]:
        config = []
        if self.subnet:
            entry = {"Subnet": self.subnet, "Gateway": self.gateway}
            if self.ip_range:
                entry["IPRange"] = self.ip_range
            config.append(entry)
        body: dict[str, Any] = {
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": "local",
            "Driver": self.driver,
            "EnableIPv4": self.driver == "bridge",
            "EnableIPv6": False,
            "IPAM": {
                "Driver": "default",
                "Options": (
                    None if self.ipam_options is None else dict(self.ipam_options)
                ),
                "Config": config,
            },
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": containers if containers is not None else {},
            "Options": dict(self.options),
            "Labels": dict(self.labels),
        }
        return body


@dataclass
class Endpoint:
    network_id: str
    network_name: str
    endpoint_id: str
    ifname: str = ""
    veth: str = ""
    ip: str = ""
    prefixlen: int = 0
    gateway: str = ""
    mac: str = ""
    aliases: list[str] = field(default_factory=list)

    def settings(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The API's EndpointSettings for this live endpoint."""
        out = empty_endpoint(self.network_id)
        if base:
            for key in ("IPAMConfig", "Links", "Aliases", "DriverOpts"):
                if key in base:
                    out[key] = base[key]
        out.update(
            EndpointID=self.endpoint_id,
            Gateway=self.gateway,
            IPAddress=self.ip,
            IPPrefixLen=self.prefixlen,
            MacAddress=self.mac,
        )
        return out


@dataclass
class Sandbox:
    container_id: str
    name: str
    mode: str  # bridge (any bridge network), none, host, container
    sandbox_id: str
    netns: str = ""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    ports: list[dict[str, Any]] = field(default_factory=list)
    hosts_path: str = ""
    hosts_lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proxies: list[portproxy.Proxy] = []

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Sandbox:
        endpoints = {
            k: Endpoint(**v) for k, v in (record.get("endpoints") or {}).items()
        }
        known = {
            k: v
            for k, v in record.items()
            if k in cls.__dataclass_fields__ and k != "endpoints"
        }
        return cls(endpoints=endpoints, **known)

    def primary(self) -> Endpoint | None:
        for endpoint in self.endpoints.values():
            if endpoint.ifname == "eth0":
                return endpoint
        return next(iter(self.endpoints.values()), None)


def empty_endpoint(network_id: str = "") -> dict[str, Any]:
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "MacAddress": "",
        "DriverOpts": None,
        "NetworkID": network_id,
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


def empty_settings() -> dict[str, Any]:
    return {
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": {},
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }


def _hc(c: Any) -> dict[str, Any]:
    return getattr(c, "host_config", None) or {}


def _cfg(c: Any) -> dict[str, Any]:
    return getattr(c, "config", None) or {}


def _name(c: Any) -> str:
    return str(getattr(c, "name", "") or "").lstrip("/")


def _running(c: Any) -> bool:
    state = getattr(c, "state", None)
    if isinstance(state, dict):
        return bool(state.get("Running"))
    return bool(getattr(state, "running", getattr(c, "running", False)))


def _settings(c: Any) -> dict[str, Any]:
    settings = getattr(c, "network_settings", None)
    if not isinstance(settings, dict):
        settings = empty_settings()
        c.network_settings = settings
    for key, value in empty_settings().items():
        settings.setdefault(key, value)
    return settings


def network_mode(host_config: dict[str, Any]) -> str:
    mode = host_config.get("NetworkMode") or "default"
    return "bridge" if mode == "default" else mode


def _bridge_ports(name: str) -> list[str]:
    try:
        return os.listdir(f"/sys/class/net/{name}/brif")
    except OSError:
        return []


def _ipv6_available() -> bool:
    return os.path.exists("/proc/net/if_inet6") and socket.has_ipv6


class NetworkManager(Component):
    def __init__(self, daemon: Any) -> None:
        super().__init__(daemon)
        self.networks: dict[str, Network] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.links: bridge.Links | None = None
        self.firewall = Firewall(self.config.bridge_name)
        self.broken: str | None = None
        self._dir = self.config.data_root / "networks"
        self._state_dir = self.config.exec_root / "network"
        self._netns_dir = self.config.exec_root / "netns"
        self._ipv6 = _ipv6_available()
        # pyroute2 keeps a socket and an event loop per thread, and namespace
        # switches are per thread: all netlink work runs on this one thread,
        # which is back in the host namespace after every task.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dockyard-net")
        self._up: asyncio.Task[None] | None = None

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """``func`` on the network thread, once the bridges are up."""
        await self.ready()
        return await self._exec(func, *args)

    async def _exec(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)

    async def ready(self) -> None:
        """Wait for ``start``'s bring-up (done at once after it finished)."""
        if self._up is not None and not self._up.done():
            await asyncio.shield(self._up)

    # -- component lifecycle --

    async def start(self) -> None:
        """Load the records; bring bridges and the firewall up in the background.

        The engine answers meanwhile: every operation that needs the kernel
        side goes through ``_run`` or ``_check_usable``, which wait for the
        bring-up. pyroute2's import alone is about a second of a machine's
        start under emulation.
        """
        self._dir.mkdir(parents=True, exist_ok=True)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._load_networks()
        self._load_sandboxes()
        self._up = asyncio.get_running_loop().create_task(self._bring_up_all())

    async def _bring_up_all(self) -> None:
        try:
            self.links = await self._exec(bridge.Links)
            for net in self.networks.values():
                if net.driver == "bridge":
                    await self._exec(self._bring_up, net)
            enable_forwarding()
            await self._exec(self._apply_firewall)
        except Exception as err:
            self.broken = f"container networking is unavailable: {err}"
            expected = isinstance(err, (OSError, EngineError))
            log.error("%s", self.broken, exc_info=not expected)

    async def stop(self) -> None:
        await self.ready()
        for sandbox in self.sandboxes.values():
            self._close_proxies(sandbox)
        if self.links is None:
            self._executor.shutdown(wait=False)
            return
        await self._reap_stale()
        if not self.sandboxes:
            # Nothing of ours uses the bridges: leave the host as we found
            # it, but never pull a bridge from under ports someone else
            # enslaved to it (another engine given the same --bridge-name).
            busy = False
            for net in self.networks.values():
                if net.driver != "bridge" or not net.bridge:
                    continue
                if _bridge_ports(net.bridge):
                    log.warning("keeping bridge %s: other links use it", net.bridge)
                    busy = True
                    continue
                with contextlib.suppress(EngineError):
                    await self._run(self.links.delete, net.bridge)
            if not busy:
                await self._run(self.firewall.remove)
        else:
            log.info(
                "keeping networking of %d container(s) for the next start",
                len(self.sandboxes),
            )
        await self._run(self.links.close)
        self.links = None
        self._executor.shutdown(wait=False)

    async def _reap_stale(self) -> None:
        """Tear down sandboxes whose container is gone or not running.

        The container manager tears down at exit; this catches what a crash
        between the two left, so a stopped engine does not keep bridges for
        nothing.
        """
        containers = getattr(self.daemon, "containers", None)
        if containers is None or not hasattr(containers, "get"):
            return
        for cid in list(self.sandboxes):
            try:
                c = containers.get(cid)
            except NotFound:
                c = None
            except Exception:
                continue
            if c is None:
                sandbox = self.sandboxes.pop(cid)
                self._close_proxies(sandbox)
                await self._run(self.firewall.remove_forwards, _forwards(sandbox))
                for endpoint in sandbox.endpoints.values():
                    self._release(endpoint)
                await self._run(self._destroy, sandbox)
                with contextlib.suppress(FileNotFoundError):
                    (self._state_dir / f"{cid}.json").unlink()
            elif not _running(c):
                await self.teardown(c)

    def _load_networks(self) -> None:
        for path in sorted(self._dir.glob("*.json")):
            try:
                net = Network.from_record(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as err:
                log.warning("skipping unreadable network record %s: %s", path, err)
                continue
            self.networks[net.id] = net

        by_name = {n.name: n for n in self.networks.values()}
        bip = ipaddress.ip_interface(self.config.bridge_ip)
        default = by_name.get("bridge")
        if default is None:
            default = Network(_new_id(), "bridge", "bridge", _now(), default=True)
            self.networks[default.id] = default
        # --bip and --bridge-name may change between runs: they win.
        default.bridge = self.config.bridge_name
        default.subnet = str(bip.network)
        default.gateway = str(bip.ip)
        default.default = True
        default.options = {
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
            "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
            "com.docker.network.bridge.name": self.config.bridge_name,
            "com.docker.network.driver.mtu": str(DEFAULT_MTU),
        }
        self._save_network(default)
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in by_name:
                net = Network(_new_id(), name, driver, _now())
                self.networks[net.id] = net
                self._save_network(net)
        for net in list(self.networks.values()):
            if net.driver != "bridge":
                continue
            try:
                net.make_pool()
            except (EngineError, ValueError) as err:
                log.warning("ignoring network %s: %s", net.name, err)
                del self.networks[net.id]

    def _save_network(self, net: Network) -> None:
        path = self._dir / f"{net.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(net.record(), indent=1))
        tmp.replace(path)

    def _bring_up(self, net: Network) -> None:
        assert self.links is not None
        prefix = ipaddress.ip_network(net.subnet).prefixlen
        self.links.ensure_bridge(net.bridge, f"{net.gateway}/{prefix}", net.mtu)

    def _apply_firewall(self) -> None:
        rules = [
            BridgeRule(n.bridge, n.subnet, n.internal, n.masquerade)
            for n in self.networks.values()
            if n.driver == "bridge"
        ]
        forwards = [f for s in self.sandboxes.values() for f in _forwards(s)]
        self.firewall.apply(rules, forwards)

    def _load_sandboxes(self) -> None:
        for path in sorted(self._state_dir.glob("*.json")):
            try:
                sandbox = Sandbox.from_record(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as err:
                log.warning("skipping unreadable sandbox %s: %s", path, err)
                continue
            self.sandboxes[sandbox.container_id] = sandbox
            for endpoint in sandbox.endpoints.values():
                net = self.networks.get(endpoint.network_id)
                if net is not None and net.pool is not None and endpoint.ip:
                    with contextlib.suppress(ValueError):
                        net.pool.reserve(endpoint.ip)

    def _save_sandbox(self, sandbox: Sandbox) -> None:
        path = self._state_dir / f"{sandbox.container_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sandbox.record()))
        tmp.replace(path)

    # -- networks: lookup and API operations --

    def get(self, name_or_id: str) -> Network:
        """A network by name, full id or unique id prefix.

        Raises NotFound("network <x> not found").
        """
        for net in self.networks.values():
            if net.name == name_or_id:
                return net
        if name_or_id in self.networks:
            return self.networks[name_or_id]
        if name_or_id:
            found = [n for n in self.networks.values() if n.id.startswith(name_or_id)]
            if len(found) == 1:
                return found[0]
        raise NotFound(f"network {name_or_id} not found")

    def list_networks(
        self, filters: dict[str, list[str]] | None = None
    ) -> list[Network]:
        filters = filters or {}
        out = []
        for net in self.networks.values():
            if filters.get("name") and not any(f in net.name for f in filters["name"]):
                continue
            if filters.get("id") and not any(
                net.id.startswith(f) for f in filters["id"]
            ):
                continue
            if filters.get("driver") and net.driver not in filters["driver"]:
                continue
            if filters.get("scope") and "local" not in filters["scope"]:
                continue
            if filters.get("label") and not _labels_match(net.labels, filters["label"]):
                continue
            kinds = filters.get("type")
            if kinds:
                kind = "builtin" if net.builtin else "custom"
                if kind not in kinds:
                    continue
            dangling = filters.get("dangling")
            if dangling:
                wanted = dangling[-1].lower() in ("1", "true")
                if wanted == bool(self._endpoints_on(net)) or (wanted and net.builtin):
                    continue
            out.append(net)
        return sorted(out, key=lambda n: n.name)

    def inspect(self, net: Network) -> dict[str, Any]:
        containers = {}
        for sandbox in self.sandboxes.values():
            endpoint = sandbox.endpoints.get(net.id)
            if endpoint is None:
                continue
            containers[sandbox.container_id] = {
                "Name": sandbox.name,
                "EndpointID": endpoint.endpoint_id,
                "MacAddress": endpoint.mac,
                "IPv4Address": f"{endpoint.ip}/{endpoint.prefixlen}"
                if endpoint.ip
                else "",
                "IPv6Address": "",
            }
        return net.inspect(containers)

    def _endpoints_on(self, net: Network) -> list[Sandbox]:
        return [
            s
            for s in self.sandboxes.values()
            if net.id in s.endpoints
            or (net.name in ("host", "none") and s.mode == net.name)
        ]

    async def create_network(self, body: dict[str, Any]) -> Network:
        """``POST /networks/create``.

        Raises InvalidParameter, Conflict (name taken), Forbidden (reserved
        name, overlapping subnet) and Unsupported (drivers other than bridge,
        IPv6).
        """
        await self._check_usable()
        name = body.get("Name") or ""
        if not isinstance(name, str) or not name:
            raise InvalidParameter("network name is required")
        if name in BUILTIN or name == "default":
            raise Forbidden(f"operation is not permitted on predefined {name} network")
        if any(n.name == name for n in self.networks.values()):
            raise Conflict(f"network with name {name} already exists")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            raise Unsupported(
                f'network driver "{driver}" is not supported by Dockyard: only bridge networks can be created'
            )
        if body.get("EnableIPv6"):
            raise Unsupported("IPv6 networks are not supported by Dockyard yet")
        if body.get("ConfigOnly") or (body.get("ConfigFrom") or {}).get("Network"):
            raise Unsupported("config-only networks are not supported by Dockyard")
        if body.get("Ingress") or (body.get("Scope") or "local") != "local":
            raise Unsupported("swarm-scoped networks are not supported by Dockyard")
        ipam = body.get("IPAM") or {}
        if (ipam.get("Driver") or "default") != "default":
            raise Unsupported(
                f'IPAM driver "{ipam["Driver"]}" is not supported by Dockyard'
            )
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        net_id = _new_id()
        net = Network(
            net_id,
            name,
            "bridge",
            _now(),
            bridge=options.get("com.docker.network.bridge.name") or f"br-{net_id[:12]}",
            internal=bool(body.get("Internal")),
            attachable=bool(body.get("Attachable")),
            labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
            options=options,
            ipam_options=(
                None
                if ipam.get("Options") is None
                else {str(k): str(v) for k, v in ipam["Options"].items()}
            ),
        )
        if len(net.bridge) > 15:
            raise InvalidParameter(
                f"bridge name {net.bridge!r} is longer than 15 characters"
            )
        if any(n.bridge == net.bridge for n in self.networks.values()):
            raise Conflict(f"bridge {net.bridge} is already used by another network")
        masquerade = options.get(
            "com.docker.network.bridge.enable_ip_masquerade", "true"
        )
        net.masquerade = masquerade.lower() not in ("false", "0")
        mtu = options.get("com.docker.network.driver.mtu")
        if mtu:
            try:
                net.mtu = int(mtu)
            except ValueError:
                raise InvalidParameter(f"invalid MTU {mtu!r}") from None

        await self._run(self._assign_subnet, net, ipam.get("Config") or [])
        net.make_pool()
        try:
            await self._run(self._bring_up, net)
            self.networks[net.id] = net
            await self._run(self._apply_firewall)
        except EngineError:
            self.networks.pop(net.id, None)
            assert self.links is not None
            with contextlib.suppress(EngineError):
                await self._run(self.links.delete, net.bridge)
            raise
        self._save_network(net)
        self.events.publish(
            "network", "create", net.id, {"name": net.name, "type": "bridge"}
        )
        log.info("created network %s (%s, %s)", net.name, net.bridge, net.subnet)
        return net

    def _assign_subnet(self, net: Network, configs: list[dict[str, Any]]) -> None:
        assert self.links is not None
        taken = [
            ipaddress.IPv4Network(n.subnet) for n in self.networks.values() if n.subnet
        ]
        v4 = [c for c in configs if ":" not in (c.get("Subnet") or "")]
        if len(v4) < len(configs):
            raise Unsupported("IPv6 subnets are not supported by Dockyard yet")
        if len(v4) > 1:
            raise Unsupported("Dockyard networks have one IPv4 subnet")
        config = v4[0] if v4 else {}
        if config.get("AuxiliaryAddresses"):
            raise Unsupported("auxiliary addresses are not supported by Dockyard")
        subnet_text = config.get("Subnet") or ""
        if subnet_text:
            subnet = parse_subnet(subnet_text)
            if str(subnet) != subnet_text.strip() and "/" in subnet_text:
                # dockerd keeps the subnet as given; host bits are an error there.
                subnet = parse_subnet(subnet_text)
            for other in taken:
                if subnet.overlaps(other):
                    raise Forbidden(
                        "invalid pool request: Pool overlaps with other one on this address space"
                    )
        else:
            if config.get("IPRange") or config.get("Gateway"):
                raise InvalidParameter("a gateway or IP range needs a subnet")
            subnet = pick_subnet([*taken, *self.links.host_networks()])
        net.subnet = str(subnet)
        if config.get("Gateway"):
            gateway = parse_address(config["Gateway"], "gateway")
            if gateway not in subnet:
                raise InvalidParameter(
                    f"invalid gateway {gateway}: not in subnet {subnet}"
                )
            net.gateway = str(gateway)
        else:
            net.gateway = str(subnet.network_address + 1)
        if config.get("IPRange"):
            ip_range = parse_subnet(config["IPRange"])
            if not ip_range.subnet_of(subnet):
                raise InvalidParameter(
                    f"invalid IP range {ip_range}: not in subnet {subnet}"
                )
            net.ip_range = str(ip_range)

    async def remove_network(self, name_or_id: str) -> None:
        """``DELETE /networks/{id}``.

        Raises NotFound, Forbidden (pre-defined network, active endpoints).
        """
        net = self.get(name_or_id)
        if net.builtin:
            raise Forbidden(
                f"{net.name} is a pre-defined network and cannot be removed"
            )
        if self._endpoints_on(net):
            raise Forbidden(
                f"error while removing network: network {net.name} id {net.id} has active endpoints"
            )
        await self.ready()
        self.networks.pop(net.id, None)
        with contextlib.suppress(FileNotFoundError):
            (self._dir / f"{net.id}.json").unlink()
        if self.links is not None:
            await self._run(self.links.delete, net.bridge)
            await self._run(self._apply_firewall)
        self.events.publish(
            "network", "destroy", net.id, {"name": net.name, "type": "bridge"}
        )
        log.info("removed network %s", net.name)

    async def prune(self, filters: dict[str, list[str]] | None = None) -> list[str]:
        """``POST /networks/prune``: user networks without endpoints."""
        filters = filters or {}
        until = _until(filters.get("until"))
        removed = []
        for net in list(self.networks.values()):
            if net.builtin or self._endpoints_on(net):
                continue
            if not _prune_labels_match(
                net.labels, filters.get("label", []), filters.get("label!", [])
            ):
                continue
            if until is not None and _created_ts(net.created) >= until:
                continue
            await self.remove_network(net.id)
            removed.append(net.name)
        return removed

    async def _check_usable(self) -> None:
        await self.ready()
        if self.broken:
            raise EngineError(self.broken)

    # -- hooks for the container manager --

    def validate(
        self,
        host_config: dict[str, Any],
        config: dict[str, Any],
        networking_config: dict[str, Any] | None = None,
    ) -> None:
        """Check a container's network settings at create.

        Raises InvalidParameter for bad ports, DNS, extra hosts, conflicting
        options, and for an unknown network or ``container:<x>`` target:
        a 404 from create makes the docker CLI think the image is missing
        and try to pull it, so these say "not found" with a 400.
        """
        try:
            self._validate(host_config, config, networking_config)
        except NotFound as err:
            raise InvalidParameter(err.message) from err

    def _validate(
        self,
        host_config: dict[str, Any],
        config: dict[str, Any],
        networking_config: dict[str, Any] | None,
    ) -> None:
        mode = network_mode(host_config)
        planned_bindings(host_config, config)
        if mode.startswith("container:"):
            target = mode.split(":", 1)[1]
            if not target:
                raise InvalidParameter(
                    "invalid network mode: container: needs a container name"
                )
            self.daemon.containers.get(target)
            if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
                raise InvalidParameter(
                    "conflicting options: port publishing and the container type network mode"
                )
            if host_config.get("Dns") or host_config.get("ExtraHosts"):
                raise InvalidParameter(
                    "conflicting options: dns and the network mode"
                    if host_config.get("Dns")
                    else "conflicting options: custom host-to-IP mapping and the network mode"
                )
        elif mode not in ("host", "none"):
            self.get(mode)
        for server in host_config.get("Dns") or []:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidParameter(f"{server} is not an ip address") from None
        for entry in host_config.get("ExtraHosts") or []:
            try:
                etcfiles.split_extra_host(entry)
            except ValueError:
                raise InvalidParameter(
                    f"invalid IP address in add-host: {entry!r}"
                ) from None
        endpoints = (networking_config or {}).get("EndpointsConfig") or {}
        for name, endpoint in endpoints.items():
            if name == "default" or name == mode:
                net = (
                    None
                    if name == "default" or mode in ("host", "none")
                    else self.get(name)
                )
            else:
                if mode in ("host", "none") or mode.startswith("container:"):
                    raise InvalidParameter(
                        f"container cannot be connected to network {name} in network mode {mode}"
                    )
                net = self.get(name)
            wanted = ((endpoint or {}).get("IPAMConfig") or {}).get("IPv4Address")
            if wanted:
                if net is None or net.default:
                    raise InvalidParameter(
                        "user specified IP address is supported only when connecting to networks with user configured subnets"
                    )
                try:
                    address = ipaddress.IPv4Address(wanted)
                except ValueError:
                    raise InvalidParameter(f"invalid IPv4 address: {wanted}") from None
                if address not in ipaddress.ip_network(net.subnet):
                    raise InvalidParameter(
                        f"no configured subnet contains IP address {wanted}"
                    )

    def initial_settings(
        self,
        host_config: dict[str, Any],
        networking_config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """NetworkSettings of a created container (no addresses yet)."""
        settings = empty_settings()
        mode = network_mode(host_config)
        if mode.startswith("container:"):
            return settings
        endpoints = dict((networking_config or {}).get("EndpointsConfig") or {})
        if "default" in endpoints:
            endpoints.setdefault(mode, endpoints.pop("default"))
        endpoints.setdefault(mode, {})
        for name, given in endpoints.items():
            net = self.get(name)
            entry = empty_endpoint(net.id)
            given = given or {}
            for key in ("IPAMConfig", "Links", "Aliases", "DriverOpts", "MacAddress"):
                if given.get(key):
                    entry[key] = given[key]
            settings["Networks"][net.name] = entry
        return settings

    async def setup(self, c: Any) -> str | None:
        """Create the container's sandbox; the netns path, None for host.

        Raises NotFound for a network that went away, Conflict when a
        ``container:<x>`` target is not running, EngineError when the kernel
        refuses. Leaves nothing behind on failure.
        """
        await self.teardown(c)
        settings = _settings(c)
        hc = _hc(c)
        mode = network_mode(hc)

        if mode == "host":
            net = self.get("host")
            sandbox = Sandbox(c.id, _name(c), "host", _new_id())
            self.sandboxes[c.id] = sandbox
            self._save_sandbox(sandbox)
            entry = settings["Networks"].get("host") or empty_endpoint(net.id)
            entry.update(NetworkID=net.id, EndpointID=_new_id())
            settings.update(
                SandboxID=sandbox.sandbox_id,
                SandboxKey="/var/run/docker/netns/default",
                Networks={"host": entry},
            )
            return None

        if mode.startswith("container:"):
            other = self.daemon.containers.get(mode.split(":", 1)[1])
            other_box = self.sandboxes.get(other.id)
            if not _running(other) or other_box is None:
                raise Conflict(
                    f"cannot join network of a non running container: {other.id}"
                )
            if other_box.mode == "host":
                return None
            return other_box.netns or None

        if mode != "none":
            await self._check_usable()
        path = self._netns_dir / c.id
        sandbox = Sandbox(
            c.id, _name(c), "none" if mode == "none" else "bridge", _new_id()
        )
        sandbox.netns = str(path)
        try:
            if mode == "none":
                await self._run(self._make_netns, path, [])
                net = self.get("none")
                entry = settings["Networks"].get("none") or empty_endpoint(net.id)
                entry.update(NetworkID=net.id, EndpointID=_new_id())
                settings["Networks"] = {"none": entry}
            else:
                plan = self._plan_endpoints(c, settings)
                for endpoint in plan:
                    sandbox.endpoints[endpoint.network_id] = endpoint
                await self._run(self._make_netns, path, plan)
        except BaseException:
            for endpoint in sandbox.endpoints.values():
                self._release(endpoint)
            await self._run(self._destroy, sandbox)
            raise
        self.sandboxes[c.id] = sandbox
        self._save_sandbox(sandbox)
        if sandbox.mode == "bridge":
            self._fill_settings(c, sandbox)
        settings.update(SandboxID=sandbox.sandbox_id, SandboxKey=str(path))
        self._publish_endpoints(sandbox, "connect")
        log.debug("sandbox of %s ready at %s", c.id[:12], path)
        return str(path)

    def _publish_endpoints(self, sandbox: Sandbox, action: str) -> None:
        """``network connect``/``disconnect`` events, as dockerd sends at a
        container's start and exit."""
        for endpoint in sandbox.endpoints.values():
            net = self.networks.get(endpoint.network_id)
            self.events.publish(
                "network",
                action,
                endpoint.network_id,
                {
                    "container": sandbox.container_id,
                    "name": net.name if net else endpoint.network_name,
                    "type": "bridge",
                },
            )

    def _plan_endpoints(self, c: Any, settings: dict[str, Any]) -> list[Endpoint]:
        """Addresses for each network of the container; eth0 first."""
        mode = network_mode(_hc(c))
        names = list(settings["Networks"]) or [mode]
        primary = self.get(mode).name if mode not in ("host", "none") else None
        if primary in names:
            names.remove(primary)
            names.insert(0, primary)
        plan: list[Endpoint] = []
        try:
            for index, name in enumerate(names):
                net = self.get(name)
                given = settings["Networks"].get(name) or {}
                plan.append(self._allocate(net, given, f"eth{index}"))
        except BaseException:
            for endpoint in plan:
                self._release(endpoint)
            raise
        return plan

    def _allocate(self, net: Network, given: dict[str, Any], ifname: str) -> Endpoint:
        if net.driver != "bridge" or net.pool is None:
            raise InvalidParameter(
                f"container cannot be connected to network {net.name}: only bridge networks can be combined"
            )
        wanted = ((given.get("IPAMConfig") or {}).get("IPv4Address")) or None
        address = net.pool.allocate(wanted)
        return Endpoint(
            network_id=net.id,
            network_name=net.name,
            endpoint_id=_new_id(),
            ifname=ifname,
            veth="veth" + secrets.token_hex(4)[:7],
            ip=str(address),
            prefixlen=net.pool.subnet.prefixlen,
            gateway="" if net.internal else str(net.pool.gateway),
            mac=given.get("MacAddress") or bridge.mac_for(str(address)),
            aliases=list(given.get("Aliases") or []),
        )

    def _release(self, endpoint: Endpoint) -> None:
        net = self.networks.get(endpoint.network_id)
        if net is not None and net.pool is not None and endpoint.ip:
            net.pool.release(endpoint.ip)

    def _make_netns(self, path: Path, endpoints: list[Endpoint]) -> None:
        """Worker thread: the namespace, then one veth per endpoint."""
        assert self.links is not None
        with netns.created(path):
            bridge.loopback_up()
        self._add_endpoints(path, endpoints, default_route=True)

    def _add_endpoints(
        self, path: Path, endpoints: list[Endpoint], default_route: bool
    ) -> None:
        assert self.links is not None
        routed = not default_route
        for endpoint in endpoints:
            net = self.networks[endpoint.network_id]
            master = self.links.index(net.bridge)
            if master is None:
                self._bring_up(net)
                master = self.links.index(net.bridge)
            assert master is not None
            self.links.add_veth(
                endpoint.veth, endpoint.ifname, path, master, endpoint.mac
            )
            gateway = endpoint.gateway if not routed and endpoint.gateway else None
            with netns.inside(path):
                bridge.configure_endpoint(
                    endpoint.ifname, endpoint.ip, endpoint.prefixlen, gateway
                )
            routed = routed or bool(gateway)

    def _destroy(self, sandbox: Sandbox) -> None:
        """Worker thread: veths and namespace gone; missing parts are fine."""
        if self.links is not None:
            for endpoint in sandbox.endpoints.values():
                try:
                    self.links.delete(endpoint.veth)
                except EngineError as err:
                    log.warning("cannot delete %s: %s", endpoint.veth, err)
        if sandbox.netns:
            try:
                netns.remove(Path(sandbox.netns))
            except OSError as err:
                log.warning("cannot remove netns %s: %s", sandbox.netns, err)

    def _fill_settings(self, c: Any, sandbox: Sandbox) -> None:
        settings = _settings(c)
        networks: dict[str, Any] = {}
        for endpoint in sandbox.endpoints.values():
            net = self.networks.get(endpoint.network_id)
            name = net.name if net else endpoint.network_name
            entry = endpoint.settings(settings["Networks"].get(name))
            if net is not None and net.user_defined:
                entry["DNSNames"] = self._dns_names(sandbox, endpoint)
            networks[name] = entry
        settings["Networks"] = networks
        primary = sandbox.primary()
        default = self.get("bridge")
        top = primary if primary and primary.network_id == default.id else None
        settings.update(
            Bridge="",
            EndpointID=top.endpoint_id if top else "",
            Gateway=top.gateway if top else "",
            IPAddress=top.ip if top else "",
            IPPrefixLen=top.prefixlen if top else 0,
            MacAddress=top.mac if top else "",
        )

    def _dns_names(self, sandbox: Sandbox, endpoint: Endpoint) -> list[str]:
        names = [sandbox.name, *endpoint.aliases, sandbox.container_id[:12]]
        return [n for i, n in enumerate(names) if n and n not in names[:i]]

    def write_etc_files(self, c: Any) -> dict[str, Path]:
        """Write hosts, hostname and resolv.conf into the container's dir.

        Returns the bind mounts to add: container path -> host file.
        """
        hc = _hc(c)
        cfg = _cfg(c)
        mode = network_mode(hc)
        if mode.startswith("container:"):
            other = self.daemon.containers.get(mode.split(":", 1)[1])
            return self._etc_paths(Path(other.dir))

        directory = Path(c.dir)
        directory.mkdir(parents=True, exist_ok=True)
        paths = self._etc_paths(directory)
        sandbox = self.sandboxes.get(c.id)
        host_mode = mode == "host"
        hostname = cfg.get("Hostname") or (
            socket.gethostname() if host_mode else c.id[:12]
        )
        default = self.get("bridge")
        extra = list(hc.get("ExtraHosts") or [])
        if host_mode:
            try:
                host_lines = Path("/etc/hosts").read_text().splitlines()
            except OSError:
                host_lines = etcfiles.BASE_HOSTS.splitlines()
            lines = (
                host_lines
                + etcfiles.hosts_lines(None, hostname, "", extra, default.gateway)[
                    len(etcfiles.BASE_HOSTS.splitlines()) :
                ]
            )
        else:
            primary = sandbox.primary() if sandbox else None
            lines = etcfiles.hosts_lines(
                primary.ip if primary else None,
                hostname,
                cfg.get("Domainname") or "",
                extra,
                default.gateway,
            )
        content = etcfiles.render_hosts(lines, self._peer_lines(sandbox))
        etcfiles.rewrite(paths["/etc/hosts"], content)
        etcfiles.rewrite(paths["/etc/hostname"], hostname + "\n")
        etcfiles.rewrite(
            paths["/etc/resolv.conf"],
            etcfiles.resolv_conf(
                list(hc.get("Dns") or []),
                list(hc.get("DnsSearch") or []),
                list(hc.get("DnsOptions") or []),
                keep_loopback=host_mode,
            ),
        )
        if sandbox is not None:
            sandbox.hosts_path = str(paths["/etc/hosts"])
            sandbox.hosts_lines = lines
            self._save_sandbox(sandbox)
            self._refresh_peers(sandbox)
        return paths

    @staticmethod
    def _etc_paths(directory: Path) -> dict[str, Path]:
        return {
            "/etc/hosts": directory / "hosts",
            "/etc/hostname": directory / "hostname",
            "/etc/resolv.conf": directory / "resolv.conf",
        }

    def _peer_lines(self, sandbox: Sandbox | None) -> list[str]:
        """Hosts entries for the containers sharing a user network."""
        if sandbox is None:
            return []
        lines = []
        for net_id in sandbox.endpoints:
            net = self.networks.get(net_id)
            if net is None or not net.user_defined:
                continue
            for peer in self.sandboxes.values():
                if peer is sandbox or net_id not in peer.endpoints:
                    continue
                endpoint = peer.endpoints[net_id]
                names = self._dns_names(peer, endpoint)
                lines.append(f"{endpoint.ip}\t{' '.join(names)}")
        return lines

    def _refresh_peers(self, changed: Sandbox) -> None:
        """Rewrite the hosts files of the containers sharing ``changed``'s
        user networks."""
        networks = {
            n
            for n in changed.endpoints
            if (net := self.networks.get(n)) and net.user_defined
        }
        if not networks:
            return
        for peer in self.sandboxes.values():
            if (
                peer is changed
                or not peer.hosts_path
                or not networks & set(peer.endpoints)
            ):
                continue
            content = etcfiles.render_hosts(peer.hosts_lines, self._peer_lines(peer))
            try:
                etcfiles.rewrite(Path(peer.hosts_path), content)
            except OSError as err:
                log.warning(
                    "cannot update hosts of %s: %s", peer.container_id[:12], err
                )

    async def publish(self, c: Any) -> None:
        """Open the container's published ports; fill NetworkSettings.Ports.

        Raises EngineError naming the port when it is taken (nothing stays
        open then).
        """
        settings = _settings(c)
        hc = _hc(c)
        cfg = _cfg(c)
        sandbox = self.sandboxes.get(c.id)
        ports: dict[str, Any] = {key: None for key in exposed_keys(hc, cfg)}
        primary = sandbox.primary() if sandbox else None
        if sandbox is None or primary is None:
            # host, none, container modes: nothing to forward (dockerd too).
            settings["Ports"] = ports if sandbox and sandbox.mode != "host" else {}
            return
        self._close_proxies(sandbox)
        opened: list[tuple[Binding, str, int, Any]] = []
        try:
            for b in planned_bindings(hc, cfg):
                for host_ip, port, sock in self._bind(b, c, primary):
                    opened.append((b, host_ip, port, sock))
        except BaseException:
            for _, _, _, sock in opened:
                sock.close()
            raise
        sandbox.ports = []
        for b, host_ip, port, sock in opened:
            proxy = portproxy.make_proxy(b.proto, sock, (primary.ip, b.container_port))
            proxy.start()
            sandbox.proxies.append(proxy)
            sandbox.ports.append(
                {
                    "proto": b.proto,
                    "host_ip": host_ip,
                    "host_port": port,
                    "container_port": b.container_port,
                }
            )
            entries = ports.get(b.key) or []
            entries.append({"HostIp": host_ip, "HostPort": str(port)})
            ports[b.key] = entries
            log.info(
                "forwarding %s:%d/%s to %s:%d",
                host_ip,
                port,
                b.proto,
                _name(c) or c.id[:12],
                b.container_port,
            )
        settings["Ports"] = ports
        self._save_sandbox(sandbox)
        forwards = _forwards(sandbox)
        if forwards:
            try:
                await self._run(self.firewall.add_forwards, forwards)
            except EngineError as err:
                # The proxy serves everyone then, only slower.
                log.warning("no DNAT for %s: %s", c.id[:12], err)

    def _bind(
        self, b: Binding, c: Any, endpoint: Endpoint
    ) -> list[tuple[str, int, Any]]:
        """Sockets for one binding on every address it names.

        An empty host IP means 0.0.0.0 and, where the host has IPv6, ``::``.
        Raises EngineError with dockerd's text when the port is taken.
        """
        addresses = [b.host_ip] if b.host_ip else ["0.0.0.0"]
        if not b.host_ip and self._ipv6:
            addresses.append("::")
        if b.host_port_low == 0:
            candidates = [0] * 20  # the kernel picks; retried if :: is taken
        else:
            candidates = list(range(b.host_port_low, b.host_port_high + 1))
        busy = (addresses[0], b.host_port_low)
        for candidate in candidates:
            opened: list[tuple[str, int, Any]] = []
            port = candidate
            try:
                for ip in addresses:
                    try:
                        sock = portproxy.bind(b.proto, ip, port)
                    except portproxy.PortInUse:
                        busy = (ip, port)
                        raise
                    except OSError as err:
                        if ip == "::":
                            log.debug("no IPv6 listener for port %d: %s", port, err)
                            continue
                        raise EngineError(
                            f"cannot publish port {b.key} on {ip}:{port}: {err.strerror}"
                        ) from err
                    port = sock.getsockname()[1]
                    opened.append((ip, port, sock))
                return opened
            except BaseException:
                for _, _, s in opened:
                    s.close()
                if not isinstance(sys.exc_info()[1], portproxy.PortInUse):
                    raise
        ip, port = busy
        shown_ip = f"[{ip}]" if ":" in ip else ip
        if b.host_port_high != b.host_port_low:
            port_text = f"{b.host_port_low}-{b.host_port_high}"
        else:
            port_text = str(port)
        raise EngineError(
            f"driver failed programming external connectivity on endpoint "
            f"{_name(c) or c.id[:12]} ({endpoint.endpoint_id}): "
            f"Bind for {shown_ip}:{port_text} failed: port is already allocated"
        )

    def _close_proxies(self, sandbox: Sandbox) -> None:
        for proxy in sandbox.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        sandbox.proxies = []

    async def teardown(self, c: Any) -> None:
        """Remove the container's sandbox; safe to call more than once."""
        settings = _settings(c)
        sandbox = self.sandboxes.pop(c.id, None)
        if sandbox is not None:
            self._close_proxies(sandbox)
            forwards = _forwards(sandbox)
            if forwards:
                await self._run(self.firewall.remove_forwards, forwards)
            for endpoint in sandbox.endpoints.values():
                self._release(endpoint)
            await self._run(self._destroy, sandbox)
            with contextlib.suppress(FileNotFoundError):
                (self._state_dir / f"{c.id}.json").unlink()
            self._refresh_peers(sandbox)
            self._publish_endpoints(sandbox, "disconnect")
            log.debug("sandbox of %s removed", c.id[:12])
        else:
            # A namespace left by a crash before the state was written.
            path = self._netns_dir / c.id
            if path.exists():
                await self._run(netns.remove, path)
        for entry in settings.get("Networks", {}).values():
            if isinstance(entry, dict):
                entry.update(
                    EndpointID="",
                    Gateway="",
                    IPAddress="",
                    IPPrefixLen=0,
                    MacAddress="",
                    DNSNames=None,
                )
        # dockerd keeps SandboxID and SandboxKey of a stopped container.
        settings.update(
            Ports={},
            EndpointID="",
            Gateway="",
            IPAddress="",
            IPPrefixLen=0,
            MacAddress="",
        )

    async def restore(self, c: Any) -> None:
        """Reopen the port proxies of a container adopted as running."""
        sandbox = self.sandboxes.get(c.id)
        if sandbox is None:
            return
        primary = sandbox.primary()
        if primary is None:
            return
        self._close_proxies(sandbox)
        for entry in sandbox.ports:
            try:
                sock = portproxy.bind(
                    entry["proto"], entry["host_ip"], entry["host_port"]
                )
            except OSError as err:
                log.warning(
                    "cannot reopen port %s:%s for %s: %s",
                    entry["host_ip"],
                    entry["host_port"],
                    c.id[:12],
                    err,
                )
                continue
            proxy = portproxy.make_proxy(
                entry["proto"], sock, (primary.ip, entry["container_port"])
            )
            proxy.start()
            sandbox.proxies.append(proxy)
        log.debug("restored %d port proxies of %s", len(sandbox.proxies), c.id[:12])

    async def connect(
        self, c: Any, network: str, endpoint_config: dict[str, Any] | None = None
    ) -> None:
        """Attach a container to a network, at once if it is running.

        Raises NotFound, Forbidden (host/none/container modes, already
        attached), InvalidParameter (bad address).
        """
        await self._check_usable()
        net = self.get(network)
        settings = _settings(c)
        mode = network_mode(_hc(c))
        if "host" in (net.name, mode):
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        if mode.startswith("container:"):
            raise Forbidden(
                "container sharing network namespace with another container or host cannot be connected to any other network"
            )
        if "none" in (net.name, mode):
            raise Forbidden(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode"
            )
        if net.name in settings["Networks"]:
            raise Forbidden(
                f"endpoint with name {_name(c)} already exists in network {net.name}"
            )
        given = dict(endpoint_config or {})
        entry = empty_endpoint(net.id)
        for key in ("IPAMConfig", "Links", "Aliases", "DriverOpts", "MacAddress"):
            if given.get(key):
                entry[key] = given[key]
        sandbox = self.sandboxes.get(c.id)
        if _running(c) and sandbox is not None and sandbox.netns:
            used = {e.ifname for e in sandbox.endpoints.values()}
            ifname = next(
                f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used
            )
            endpoint = self._allocate(net, entry, ifname)
            try:
                await self._run(
                    self._add_endpoints,
                    Path(sandbox.netns),
                    [endpoint],
                    not any(e.gateway for e in sandbox.endpoints.values()),
                )
            except BaseException:
                self._release(endpoint)
                if self.links is not None:
                    await self._run(self.links.delete, endpoint.veth)
                raise
            sandbox.endpoints[net.id] = endpoint
            self._save_sandbox(sandbox)
            settings["Networks"][net.name] = entry
            self._fill_settings(c, sandbox)
            self._rewrite_own_hosts(sandbox)
            self._refresh_peers(sandbox)
        else:
            settings["Networks"][net.name] = entry
        self.events.publish(
            "network",
            "connect",
            net.id,
            {"container": c.id, "name": net.name, "type": net.driver},
        )
        self._save_container(c)

    async def disconnect(self, c: Any, network: str, force: bool = False) -> None:
        """Detach a container from a network. Raises NotFound, Forbidden."""
        net = self.get(network)
        settings = _settings(c)
        if net.name not in settings["Networks"]:
            raise Forbidden(f"container {c.id} is not connected to network {net.name}")
        if net.name == "host" or (net.name == "none" and not force):
            raise Forbidden(
                f"container cannot be disconnected from {net.name} network"
                if net.name == "host"
                else "container cannot be disconnected from none network"
            )
        await self.ready()
        sandbox = self.sandboxes.get(c.id)
        endpoint = sandbox.endpoints.pop(net.id, None) if sandbox else None
        if sandbox is not None and endpoint is not None:
            self._release(endpoint)
            if self.links is not None:
                await self._run(self.links.delete, endpoint.veth)
            self._save_sandbox(sandbox)
            self._refresh_peers_of(net.id, sandbox)
        del settings["Networks"][net.name]
        if sandbox is not None:
            self._fill_settings(c, sandbox)
            self._rewrite_own_hosts(sandbox)
        self.events.publish(
            "network",
            "disconnect",
            net.id,
            {"container": c.id, "name": net.name, "type": net.driver},
        )
        self._save_container(c)

    def _refresh_peers_of(self, net_id: str, left: Sandbox) -> None:
        for peer in self.sandboxes.values():
            if peer is left or not peer.hosts_path or net_id not in peer.endpoints:
                continue
            content = etcfiles.render_hosts(peer.hosts_lines, self._peer_lines(peer))
            with contextlib.suppress(OSError):
                etcfiles.rewrite(Path(peer.hosts_path), content)

    def _rewrite_own_hosts(self, sandbox: Sandbox) -> None:
        if sandbox.hosts_path:
            content = etcfiles.render_hosts(
                sandbox.hosts_lines, self._peer_lines(sandbox)
            )
            with contextlib.suppress(OSError):
                etcfiles.rewrite(Path(sandbox.hosts_path), content)

    def _save_container(self, c: Any) -> None:
        save = getattr(self.daemon.containers, "save", None)
        if callable(save):
            save(c)


def _forwards(sandbox: Sandbox) -> list[Forward]:
    """The sandbox's ports published on every address, for kernel DNAT."""
    primary = sandbox.primary()
    if primary is None:
        return []
    return [
        Forward(p["proto"], p["host_port"], primary.ip, p["container_port"])
        for p in sandbox.ports
        if p["host_ip"] == "0.0.0.0"
    ]


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _prune_labels_match(
    labels: dict[str, str], wanted: list[str], unwanted: list[str]
) -> bool:
    if wanted and not _labels_match(labels, wanted):
        return False
    for item in unwanted:
        key, sep, value = item.partition("=")
        if key in labels and (not sep or labels[key] == value):
            return False
    return True


def _created_ts(created: str) -> float:
    try:
        return datetime.datetime.fromisoformat(
            created.replace("Z", "+00:00")
        ).timestamp()
    except ValueError:
        return 0.0


def _until(values: list[str] | None) -> float | None:
    """A prune ``until``: unix seconds, an RFC 3339 time or a Go duration."""
    if not values:
        return None
    value = values[-1]
    try:
        return float(value)
    except ValueError:
        pass
    with contextlib.suppress(ValueError):
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InvalidParameter(f"invalid value for until: {value!r}")
    return time.time() - sum(float(n) * units[u] for n, u in parts)
