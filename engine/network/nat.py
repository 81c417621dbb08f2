"""Dockyard's own nftables table: outbound NAT, isolation, published ports.

Everything lives in one table of its own (``inet dockyard``, or
``inet dockyard_<bridge>`` for an engine started with another
``--bridge-name``, so engines side by side never share one). The table is
rewritten whole, atomically, with a single ``nft -f -`` whenever the set of
bridge networks changes (engine start, network create and remove); a
published port only adds or deletes one element of a map. No other table is
ever touched::

    table inet dockyard {
        map published {      # tcp . 8080 : 172.30.0.2 . 80
            type inet_proto . inet_service : ipv4_addr . inet_service
        }
        chain prerouting {   # from outside: straight to the container
            type nat hook prerouting priority dstnat
            iifname { "dockyard0" } return
            fib daddr type local dnat ip to meta l4proto . th dport map @published
        }
        chain postrouting {  # containers reach the outside as the host
            type nat hook postrouting priority srcnat
            ip saddr 172.30.0.0/16 oifname != "dockyard0" masquerade
        }
        chain forward {      # internal networks stay internal
            type filter hook forward priority filter
            iifname "br-1a2b" oifname != "br-1a2b" drop
        }
    }

Connections from the host itself (127.0.0.1) and from containers never
pass prerouting's DNAT: the engine's userland proxy, which also holds the
port, serves them. Only ports published on every address (0.0.0.0) are in
the map.

A host whose own firewall drops forwarded traffic (a FORWARD policy of DROP
left by Docker, say) still drops ours: an accept in one table does not
overrule a drop in another.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

from engine.errors import EngineError

log = logging.getLogger(__name__)


@dataclass
class BridgeRule:
    bridge: str
    subnet: str
    internal: bool = False
    masquerade: bool = True


@dataclass(frozen=True)
class Forward:
    """A published port DNATed to a container: ``proto . port : ip . port``."""

    proto: str
    port: int
    address: str
    target_port: int

    @property
    def key(self) -> str:
        return f"{self.proto} . {self.port}"

    @property
    def element(self) -> str:
        return f"{self.key} : {self.address} . {self.target_port}"


def table_name(bridge_name: str) -> str:
    if bridge_name == "dockyard0":
        return "dockyard"
    return "dockyard_" + re.sub(r"[^A-Za-z0-9_]", "_", bridge_name)


def render(
    table: str, bridges: list[BridgeRule], forwards: list[Forward] | None = None
) -> str:
    nat_rules = []
    forward_rules = []
    for b in bridges:
        if b.internal:
            forward_rules.append(f'iifname "{b.bridge}" oifname != "{b.bridge}" drop')
            forward_rules.append(f'oifname "{b.bridge}" iifname != "{b.bridge}" drop')
        elif b.masquerade:
            nat_rules.append(f'ip saddr {b.subnet} oifname != "{b.bridge}" masquerade')
    # Docker-style isolation: one bridge network does not reach another.
    names = [b.bridge for b in bridges]
    for b in bridges:
        others = [n for n in names if n != b.bridge]
        if others:
            listed = ", ".join(f'"{n}"' for n in others)
            forward_rules.append(f'iifname "{b.bridge}" oifname {{ {listed} }} drop')
    elements = ", ".join(f.element for f in forwards or [])
    bridge_set = ", ".join(f'"{n}"' for n in names)
    lines = [
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  map published {",
        "    type inet_proto . inet_service : ipv4_addr . inet_service",
        *([f"    elements = {{ {elements} }}"] if elements else []),
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *([f"    iifname {{ {bridge_set} }} return"] if names else []),
        "    fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @published",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {r}" for r in nat_rules),
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {r}" for r in forward_rules),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class Firewall:
    """Writes and removes the engine's nft table."""

    def __init__(self, bridge_name: str) -> None:
        self.table = table_name(bridge_name)
        self.nft = shutil.which("nft")

    def apply(
        self, bridges: list[BridgeRule], forwards: list[Forward] | None = None
    ) -> None:
        """Replace the table with rules for ``bridges`` and ``forwards``.

        Without nft the engine still runs, with containers that cannot reach
        beyond the host: that is logged as a warning.
        """
        if self.nft is None:
            log.warning("nft not found: containers get no outbound NAT")
            return
        self._nft(render(self.table, bridges, forwards))
        log.debug("nft table %s: %d bridge(s)", self.table, len(bridges))

    def add_forwards(self, forwards: list[Forward]) -> None:
        """Add published ports to the DNAT map. Raises EngineError."""
        if self.nft is None or not forwards:
            return
        elements = ", ".join(f.element for f in forwards)
        self._nft(f"add element inet {self.table} published {{ {elements} }}\n")

    def remove_forwards(self, forwards: list[Forward]) -> None:
        """Delete published ports from the DNAT map; missing ones are fine."""
        if self.nft is None or not forwards:
            return
        for f in forwards:
            # One by one: a batch fails whole when one element is missing.
            try:
                self._nft(f"delete element inet {self.table} published {{ {f.key} }}\n")
            except EngineError as err:
                log.debug("%s", err)

    def _nft(self, script: str) -> None:
        assert self.nft is not None
        result = subprocess.run(
            [self.nft, "-f", "-"], input=script, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise EngineError(
                f"cannot program nftables table {self.table}: {result.stderr.strip()}"
            )

    def remove(self) -> None:
        if self.nft is None:
            return
        script = f"table inet {self.table}\ndelete table inet {self.table}\n"
        result = subprocess.run(
            [self.nft, "-f", "-"], input=script, capture_output=True, text=True
        )
        if result.returncode != 0:
            log.warning("cannot remove nft table %s: %s", self.table, result.stderr)


def enable_forwarding() -> None:
    """Turn on IPv4 forwarding, as dockerd does; a failure is only a warning."""
    try:
        with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
            if f.read().strip() != "1":
                f.seek(0)
                f.write("1")
    except OSError as err:
        log.warning("cannot enable IPv4 forwarding: %s", err)
