"""Egress policy for verification traffic.

Verifying arbitrary hosts from inside a cluster is a server-side request
forgery risk, so every driver resolves names through ``EgressPolicy`` and
connects only to the addresses it returns. The check runs after DNS
resolution (a harmless-looking name may point at a metadata address) and
before any packet is sent to the target.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from patchbay.drivers.base import DriverError, IPAddress
from patchbay.reasons import Reason

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Link-local ranges hold the cloud metadata services (169.254.169.254 on AWS,
# GCP, Azure, OpenStack; fd00:ec2::254 on AWS IPv6); the others are metadata
# or host endpoints of specific clouds. "Unspecified" addresses reach the
# local host on most systems.
DEFAULT_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "168.63.129.16/32",
        "0.0.0.0/32",
        "::/128",
    )
)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses, e.g. '10.0.0.0/8' or '127.0.0.2'."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


# IPv6 forms that carry an IPv4 address in their last 32 bits: IPv4-compatible
# (deprecated, still routed by some stacks) and the NAT64 well-known prefix.
_EMBEDDING_IPV4 = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b::/96"))


def _normalize(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, if any, so IPv4 rules apply to it."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if any(address in net for net in _EMBEDDING_IPV4) and int(address) > 1:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True)
class EgressPolicy:
    """Deny wins over allow; an empty allow list allows everything not denied."""

    denied: tuple[Network, ...] = DEFAULT_DENIED
    allowed: tuple[Network, ...] = field(default_factory=tuple)

    def permits(self, address: IPAddress) -> bool:
        address = _normalize(address)
        if any(address in net for net in self.denied if net.version == address.version):
            return False
        if not self.allowed:
            return True
        return any(address in net for net in self.allowed if net.version == address.version)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve without blocking the loop; every address must pass the policy."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            addresses = await self._lookup(host, port)
        denied = [a for a in addresses if not self.permits(a)]
        if denied:
            raise DriverError(
                Reason.EGRESS_DENIED,
                f"{host} resolves to {denied[0]}, which the operator's egress policy denies",
            )
        return addresses

    @staticmethod
    async def _lookup(host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise DriverError(
                Reason.HOST_UNREACHABLE, f"cannot resolve host {host}: {exc.strerror}"
            ) from None
        seen: dict[IPAddress, None] = {}
        for *_, sockaddr in infos:
            seen.setdefault(ipaddress.ip_address(sockaddr[0]), None)
        return list(seen)
