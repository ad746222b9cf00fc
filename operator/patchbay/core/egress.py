"""Egress policy for verification traffic.

Verifying arbitrary hosts from inside a cluster is a server-side request
forgery risk, so every driver resolves names through ``EgressPolicy`` and
connects only to the addresses it returns. The check runs after DNS
resolution (a harmless-looking name may point at a metadata address) and
before any packet is sent to the target.

A host written as an address is checked as the address it stands for, in every
form the C library accepts: ``127.1``, ``2130706433``, ``017700000001`` and
``0x7f.1`` all mean 127.0.0.1 to ``inet_aton``, and clients such as aiohttp
connect to such hosts without asking a resolver. ``address_literal`` turns them
into the canonical address; a host that looks numeric but is no valid address
(``::ffff:127.1``, ``127.0.0.1.``) is refused as invalid rather than looked up.
Lookups run in their own thread pool (``patchbay.workers``), never behind
CPU-bound work.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.drivers.base import DriverError, Egress, IPAddress
from patchbay.workers import resolve

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


# The characters of IPv4 addresses in inet_aton's forms: decimal, octal (leading
# 0) or hexadecimal (0x) parts, one to four of them.
_INET_ATON_FORM = re.compile(r"[0-9a-fA-FxX.]{1,64}")
# A last label of digits only: a top-level domain never is (RFC 3696), an address may be.
_NUMERIC_LABEL = re.compile(r"[0-9]+")


def address_literal(host: str) -> IPAddress | None:
    """The canonical address a host written as an IP address stands for; None for a name.

    IPv6 may be bracketed (``[::1]``) and carry a zone; IPv4 may be in any form
    ``inet_aton`` accepts, as getaddrinfo and the socket calls do.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if not _INET_ATON_FORM.fullmatch(text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def looks_like_address(host: str) -> bool:
    """Whether a host is, or could be taken for, an IP address rather than a DNS name.

    HTTP clients connect to such hosts without asking a resolver, so the policy
    must see them first: anything with a colon, and anything whose last label
    is all digits, besides every valid literal.
    """
    if ":" in host or address_literal(host) is not None:
        return True
    return _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]) is not None


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
        literal = address_literal(host)
        if literal is not None:
            addresses = [literal]
        elif looks_like_address(host):
            raise DriverError(
                Reason.CONFIG_INVALID, f"host {host} is neither a valid IP address nor a host name"
            )
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
        try:
            found = await resolve(host, port)
        except socket.gaierror as exc:
            raise DriverError(
                Reason.HOST_UNREACHABLE, f"cannot resolve host {host}: {exc.strerror}"
            ) from None
        return list(dict.fromkeys(ipaddress.ip_address(address) for address in found))


def host_matches(pattern: str, host: str) -> bool:
    """A connector's host pattern: exact, or '*.' then one or more labels before the rest."""
    host = host.rstrip(".").lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class ConnectorEgress:
    """The operator's egress policy narrowed to the hosts and networks a connector allows.
    Drivers resolve every host they connect to through it (the configured host, OAuth
    token URLs, each redirect hop), so a destination outside is refused before anything
    is sent to it."""

    policy: Egress
    hosts: tuple[str, ...]
    networks: tuple[Network, ...]

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        if any(host_matches(pattern, host) for pattern in self.hosts):
            return await self.policy.resolve(host, port)
        if self.networks:
            addresses = await self.policy.resolve(host, port)
            inside = (
                any(a in net for net in self.networks if net.version == a.version)
                for a in map(_normalize, addresses)
            )
            if all(inside):
                return addresses
        allowed = ", ".join([*self.hosts, *map(str, self.networks)])
        raise DriverError(
            Reason.EGRESS_DENIED,
            f"{host} is not a host this connector allows ({allowed}); nothing was sent",
        )


def connector_egress(policy: Egress, connector: ConnectorSpec) -> Egress:
    """The egress a connector's Connections use: the policy itself when it restricts none."""
    allowed = connector.egress
    if allowed is None or not (allowed.hosts or allowed.networks):
        return policy
    return ConnectorEgress(policy, tuple(allowed.hosts), parse_networks(allowed.networks))
