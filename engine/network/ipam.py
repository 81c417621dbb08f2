"""IPv4 address management for bridge networks.

Each network owns one :class:`Pool`: its subnet, its gateway (the bridge's
own address) and the addresses handed to container endpoints. Allocation
goes round the subnet from the last address given, as dockerd's default
IPAM does, so an address just released is not reused at once (a peer may
still cache its ARP entry)::

    pool = Pool(ipaddress.ip_network("172.18.0.0/16"))
    pool.gateway             # 172.18.0.1
    pool.allocate()          # 172.18.0.2
    pool.release(ip)

Subnets for new networks come from dockerd's default pools, skipping any
that overlap a route or address already on the host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from engine.errors import Conflict, InvalidParameter

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


def default_pools() -> Iterable[IPv4Network]:
    """dockerd's local defaults: 172.17-31.0.0/16, then 192.168.0.0/20 blocks."""
    for second in range(17, 32):
        yield IPv4Network(f"172.{second}.0.0/16")
    yield from IPv4Network("192.168.0.0/16").subnets(new_prefix=20)


class Pool:
    def __init__(
        self,
        subnet: IPv4Network,
        gateway: IPv4Address | None = None,
        ip_range: IPv4Network | None = None,
    ) -> None:
        if subnet.prefixlen > 30:
            raise InvalidParameter(f"subnet {subnet} is too small for a network")
        self.subnet = subnet
        self.gateway = gateway or subnet.network_address + 1
        if self.gateway not in subnet:
            raise InvalidParameter(f"no matching subnet for gateway {self.gateway}")
        self.range = ip_range or subnet
        if not self.range.subnet_of(subnet):
            raise InvalidParameter(f"IP range {ip_range} is not within subnet {subnet}")
        self._used: set[IPv4Address] = {self.gateway}
        self._last = int(self.range.network_address)

    def allocate(self, wanted: str | None = None) -> IPv4Address:
        """The next free address, or ``wanted``.

        Raises InvalidParameter for an address outside the subnet, Conflict
        when it is taken or the pool is full.
        """
        if wanted:
            try:
                address = IPv4Address(wanted)
            except ValueError:
                raise InvalidParameter(f"invalid IPv4 address: {wanted}") from None
            if address not in self.subnet or address in (
                self.subnet.network_address,
                self.subnet.broadcast_address,
            ):
                raise InvalidParameter(
                    f"no configured subnet contains IP address {address}"
                )
            if address in self._used:
                raise Conflict(f"Address already in use: {address}")
            self._used.add(address)
            return address

        first = int(self.range.network_address) + 1
        last = int(self.range.broadcast_address) - 1
        count = last - first + 1
        for step in range(1, count + 1):
            candidate = first + (self._last - first + step) % count
            address = IPv4Address(candidate)
            if address not in self._used:
                self._used.add(address)
                self._last = candidate
                return address
        raise Conflict(
            f"no available IPv4 addresses on this network's subnet {self.subnet}"
        )

    def reserve(self, address: str | IPv4Address) -> None:
        """Mark an address taken (endpoints found at engine start)."""
        self._used.add(IPv4Address(address))

    def release(self, address: str | IPv4Address) -> None:
        ip = IPv4Address(address)
        if ip != self.gateway:
            self._used.discard(ip)

    def in_use(self) -> int:
        return len(self._used) - 1


def pick_subnet(taken: Iterable[IPv4Network]) -> IPv4Network:
    """The first default pool overlapping none of ``taken``.

    Raises Conflict when every pool overlaps (dockerd's message).
    """
    busy = list(taken)
    for candidate in default_pools():
        if not any(candidate.overlaps(net) for net in busy):
            return candidate
    raise Conflict("all predefined address pools have been fully subnetted")


def parse_subnet(value: str) -> IPv4Network:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidParameter(f"invalid subnet {value!r}: not a CIDR") from None
    if not isinstance(network, IPv4Network):
        raise InvalidParameter(
            f"IPv6 subnet {value} is not supported: Dockyard networks are IPv4 only"
        )
    return network


def parse_address(value: str, what: str = "address") -> IPv4Address:
    try:
        address = ipaddress.ip_address(value.split("/")[0])
    except ValueError:
        raise InvalidParameter(f"invalid {what} {value!r}") from None
    if not isinstance(address, IPv4Address):
        raise InvalidParameter(f"IPv6 {what} {value} is not supported")
    return address
