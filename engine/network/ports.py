"""Published ports: what the API's PortBindings and ExposedPorts ask for.

The CLI sends ``-p 127.0.0.1:8080:80/udp`` as
``{"80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}``; ``-p 80``
leaves HostPort empty (any free port) and ``-P`` publishes every exposed
port that has no binding yet. :func:`planned_bindings` turns a container's
settings into the list of :class:`Binding` to open.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidParameter, Unsupported

PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass
class Binding:
    container_port: int
    proto: str
    host_ip: str  # "" = every address (0.0.0.0 and ::)
    host_port_low: int  # 0 = any free port
    host_port_high: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def parse_port_key(key: str) -> tuple[int, str]:
    """``"80/tcp"`` into ``(80, "tcp")``; no protocol means tcp.

    Errors use dockerd's words: ``invalid port specification: "70000"``.
    """
    port, _, proto = str(key).partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidParameter(f"invalid proto: {proto}")
    number = _port(port)
    if number == 0:
        raise InvalidParameter(f'invalid port specification: "{port}"')
    return number, proto


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidParameter(f'invalid port specification: "{value}"') from None
    if not 0 <= number <= 65535:
        raise InvalidParameter(f'invalid port specification: "{value}"')
    return number


def parse_host_port(value: str | None) -> tuple[int, int]:
    """``""`` -> any, ``"8080"``, ``"8000-8010"`` (the first free one)."""
    value = (value or "").strip()
    if value == "":
        return 0, 0
    low, sep, high = value.partition("-")
    first = _port(low)
    last = _port(high) if sep else first
    if last < first:
        raise InvalidParameter(f'invalid port specification: "{value}"')
    return first, last


def parse_host_ip(value: str | None) -> str:
    value = (value or "").strip().strip("[]")
    if value == "":
        return ""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidParameter(f"invalid host IP address: {value}") from None
    return value


def planned_bindings(
    host_config: dict[str, Any], config: dict[str, Any]
) -> list[Binding]:
    """Every binding the container asks for, validated.

    Raises InvalidParameter for a malformed port, address or protocol, and
    Unsupported for sctp (no proxy for it).
    """
    bindings: list[Binding] = []
    port_bindings = host_config.get("PortBindings") or {}
    if not isinstance(port_bindings, dict):
        raise InvalidParameter("invalid PortBindings: must be an object")
    for key, entries in port_bindings.items():
        port, proto = parse_port_key(key)
        for entry in entries or [{}]:
            entry = entry or {}
            low, high = parse_host_port(entry.get("HostPort"))
            bindings.append(
                Binding(port, proto, parse_host_ip(entry.get("HostIp")), low, high)
            )
    exposed = config.get("ExposedPorts") or {}
    if not isinstance(exposed, dict):
        raise InvalidParameter("invalid ExposedPorts: must be an object")
    normalised = {}
    for key in exposed:
        port, proto = parse_port_key(key)
        normalised[f"{port}/{proto}"] = (port, proto)
    if host_config.get("PublishAllPorts"):
        bound = {b.key for b in bindings}
        for key, (port, proto) in sorted(normalised.items()):
            if key not in bound:
                bindings.append(Binding(port, proto, "", 0, 0))
    for b in bindings:
        if b.proto == "sctp":
            raise Unsupported(
                f"publishing sctp port {b.container_port} is not supported by Dockyard"
            )
    return bindings


def exposed_keys(host_config: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Every port the container exposes or publishes, as ``"80/tcp"``."""
    keys = set()
    for key in config.get("ExposedPorts") or {}:
        port, proto = parse_port_key(key)
        keys.add(f"{port}/{proto}")
    for key in host_config.get("PortBindings") or {}:
        port, proto = parse_port_key(key)
        keys.add(f"{port}/{proto}")
    return sorted(keys, key=lambda k: (int(k.split("/")[0]), k))
