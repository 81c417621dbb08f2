"""Linux bridges and veth pairs, through one long-lived netlink handle.

A bridge network is a Linux bridge holding the gateway address; each
container endpoint is a veth pair whose host end is enslaved to the bridge
and whose other end is created directly inside the container's namespace as
``eth0`` (no rename or move afterwards)::

    links = Links()
    index = links.ensure_bridge("dockyard0", "172.30.0.1/16")
    links.add_veth("veth1a2b3c4", "eth0", netns_path, index, mac)
    with netns.inside(netns_path):
        configure_endpoint("eth0", "172.30.0.2", 16, mac, gateway)

Netlink replies are fast (well under a millisecond), so callers run these in
a worker thread only because namespace switching is per-thread.

pyroute2 is imported at first use, on that thread: its package import reads
every installed distribution's entry points, about a second of a machine's
start under emulation, which the network manager keeps off the path to the
engine's first answer.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)
# pyroute2 logs every netlink message at debug: thousands of lines per
# container, drowning the engine's own debug log.
logging.getLogger("pyroute2").setLevel(logging.WARNING)


class NetworkError(EngineError):
    """The kernel refused a network change."""


def _iproute() -> IPRoute:
    from pyroute2 import IPRoute

    return IPRoute()


def _netlink_error() -> Any:
    """pyroute2's NetlinkError, for ``except`` clauses (imported by then)."""
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


class Links:
    """The engine's netlink handle on the host namespace."""

    def __init__(self) -> None:
        self._ipr = _iproute()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._ipr.close()

    def index(self, name: str) -> int | None:
        with self._lock:
            found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def ensure_bridge(self, name: str, cidr: str, mtu: int = 1500) -> int:
        """The bridge ``name`` with exactly ``cidr`` as its address, up.

        An existing bridge (left by a previous engine run) is reused.
        """
        interface = ipaddress.ip_interface(cidr)
        with self._lock:
            try:
                found = self._ipr.link_lookup(ifname=name)
                if not found:
                    self._ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
                    found = self._ipr.link_lookup(ifname=name)
                index = found[0]
                present = {
                    (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                    for a in self._ipr.get_addr(index=index, family=2)
                }
                wanted = (str(interface.ip), interface.network.prefixlen)
                for address, prefix in present - {wanted}:
                    self._ipr.addr(
                        "del", index=index, address=address, prefixlen=prefix
                    )
                if wanted not in present:
                    self._ipr.addr(
                        "add", index=index, address=wanted[0], prefixlen=wanted[1]
                    )
                self._ipr.link("set", index=index, state="up")
            except _netlink_error() as err:
                raise NetworkError(
                    f"cannot set up bridge {name} with {cidr}: {os.strerror(err.code)}"
                ) from err
        return index

    def delete(self, name: str) -> None:
        """Delete a link by name; a missing one is fine."""
        with self._lock:
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                return
            try:
                self._ipr.link("del", index=found[0])
            except _netlink_error() as err:
                if err.code != errno.ENODEV:
                    raise NetworkError(
                        f"cannot delete {name}: {os.strerror(err.code)}"
                    ) from err

    def add_veth(
        self, host_name: str, peer_name: str, netns_path: Path, master: int, mac: str
    ) -> None:
        """A veth pair: ``host_name`` on ``master``, ``peer_name`` in the netns."""
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self._lock:
                self._ipr.link(
                    "add",
                    ifname=host_name,
                    kind="veth",
                    master=master,
                    state="up",
                    peer={"ifname": peer_name, "net_ns_fd": fd, "address": mac},
                )
        except _netlink_error() as err:
            raise NetworkError(
                f"cannot create veth {host_name}: {os.strerror(err.code)}"
            ) from err
        finally:
            os.close(fd)

    def host_networks(self) -> list[ipaddress.IPv4Network]:
        """Subnets already on the host (addresses and routes), for IPAM."""
        nets: list[ipaddress.IPv4Network] = []
        with self._lock:
            for addr in self._ipr.get_addr(family=2):
                ip = addr.get_attr("IFA_ADDRESS")
                if ip and not ip.startswith("127."):
                    nets.append(
                        ipaddress.IPv4Network(f"{ip}/{addr['prefixlen']}", strict=False)
                    )
            for route in self._ipr.get_routes(family=2, table=254):
                dst = route.get_attr("RTA_DST")
                if dst and route["dst_len"] > 0:
                    nets.append(
                        ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False)
                    )
        return nets


def configure_endpoint(
    ifname: str,
    address: str,
    prefixlen: int,
    gateway: str | None,
    lo: bool = False,
) -> None:
    """Inside the container's namespace (see ``netns.inside``): address,
    link up, default route; ``lo`` brings the loopback up too."""
    with _iproute() as ipr:
        if lo:
            ipr.link("set", index=1, state="up")
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        if gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def loopback_up() -> None:
    """Inside a namespace: bring ``lo`` up (``--network none``)."""
    with _iproute() as ipr:
        ipr.link("set", index=1, state="up")


def interface_names() -> set[str]:
    """Inside a namespace: the names of its links."""
    with _iproute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def mac_for(address: str) -> str:
    """dockerd's classic MAC: 02:42 then the four bytes of the IPv4 address."""
    packed = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)
