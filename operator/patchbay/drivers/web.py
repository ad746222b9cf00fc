"""What the drivers that speak HTTP through aiohttp share.

Name resolution goes only through the egress policy (``EgressResolver``), so
the addresses a driver connects to are exactly the ones the policy approved,
with no second lookup an attacker could rebind. aiohttp skips the resolver for
IP-literal hosts: callers check those with ``is_ip_literal`` and the policy
before each request. ``classify_client_error`` maps aiohttp's failures onto
reason codes with messages that never quote a URL or header.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import re
import socket
import ssl
import tempfile
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from patchbay import __version__
from patchbay.drivers.base import DriverError, Egress, TlsMaterial
from patchbay.reasons import Reason

USER_AGENT = f"patchbay/{__version__}"
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}")
# Control characters in a server's text (headers, error bodies) before it is shown.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


class EgressResolver(AbstractResolver):
    """Resolves host names only through the egress policy."""

    def __init__(self, egress: Egress) -> None:
        self._egress = egress

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._egress.resolve(host, port)
        results: list[ResolveResult] = []
        for address in addresses:
            addr_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=addr_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise DriverError(Reason.HOST_UNREACHABLE, f"host {host} has no usable address")
        return results

    async def close(self) -> None:
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def client_ssl_context(tls: TlsMaterial) -> ssl.SSLContext:
    """Runs in a thread: loading PEM material is blocking file and crypto work."""
    context = ssl.create_default_context()
    if tls.ca_pem:
        try:
            context.load_verify_locations(cadata=tls.ca_pem)
        except (ssl.SSLError, ValueError):
            raise DriverError(
                Reason.CONFIG_INVALID, "the TLS CA certificate is not valid PEM"
            ) from None
    if tls.client_cert_pem or tls.client_key_pem:
        if not (tls.client_cert_pem and tls.client_key_pem):
            raise DriverError(
                Reason.CONFIG_INVALID, "a TLS client certificate needs both certificate and key"
            )
        # ssl can load a key only from a file: keep it in a private directory
        # (mode 0700) for the moment it takes, and remove it whatever happens.
        with tempfile.TemporaryDirectory(prefix="patchbay-tls-") as directory:
            cert_path = os.path.join(directory, "tls.crt")
            key_path = os.path.join(directory, "tls.key")
            for path, pem in ((cert_path, tls.client_cert_pem), (key_path, tls.client_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(pem)
            try:
                context.load_cert_chain(cert_path, key_path)
            except (ssl.SSLError, ValueError):
                raise DriverError(
                    Reason.CONFIG_INVALID,
                    "the TLS client certificate or key is not valid PEM, or they do not match",
                ) from None
    return context


def _driver_error_in(exc: BaseException) -> DriverError | None:
    """The resolver's DriverError, if aiohttp wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DriverError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _os_detail(exc: OSError | None) -> str:
    if exc is None:
        return "connection failed"
    return exc.strerror or type(exc).__name__


def classify_client_error(exc: Exception) -> tuple[Reason, str, bool | None] | None:
    """Reason, safe detail and retryability for a failed request; None leaves it alone."""
    inner = _driver_error_in(exc)
    if inner is not None:
        return inner.code, inner.message, inner.retryable
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError):
        return Reason.TIMEOUT, "timed out", None
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        detail = getattr(cert_error, "verify_message", None) or type(cert_error).__name__
        return Reason.TLS_ERROR, f"TLS certificate verification failed: {detail}", None
    if isinstance(exc, aiohttp.ClientSSLError):
        return Reason.TLS_ERROR, f"TLS handshake failed: {_os_detail(exc.os_error)}", None
    if isinstance(exc, ssl.SSLError):
        return Reason.TLS_ERROR, f"TLS error: {exc.reason or type(exc).__name__}", None
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Reason.HOST_UNREACHABLE, f"cannot connect: {_os_detail(exc.os_error)}", None
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return (
            Reason.PROTOCOL_ERROR,
            "the server closed the connection without a complete response",
            None,
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Reason.PROTOCOL_ERROR, "malformed response body", None
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its own text quotes the full URL, query included: never show it.
        return Reason.PROTOCOL_ERROR, "malformed HTTP response", None
    if isinstance(exc, aiohttp.InvalidURL):
        return Reason.CONFIG_INVALID, "invalid URL", None
    if isinstance(exc, aiohttp.ClientOSError):
        return Reason.PROTOCOL_ERROR, f"connection lost: {_os_detail(exc)}", None
    if isinstance(exc, aiohttp.ClientError):
        return Reason.PROTOCOL_ERROR, f"request failed ({type(exc).__name__})", None
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "timed out", None
    if isinstance(exc, OSError):
        return Reason.HOST_UNREACHABLE, f"cannot connect: {_os_detail(exc)}", None
    if isinstance(exc, ValueError):
        # e.g. a header aiohttp refuses; its text may quote the value.
        return Reason.CONFIG_INVALID, f"the request could not be built ({type(exc).__name__})", None
    return None
