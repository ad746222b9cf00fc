"""What the drivers that speak HTTP through aiohttp share.

Name resolution goes only through the egress policy (``EgressResolver``, which
``egress_session`` uses), so the addresses a driver connects to are exactly the
ones the policy approved, with no second lookup an attacker could rebind.
aiohttp skips the resolver for IP-literal hosts: callers put those to the
policy with ``check_ip_literal`` before each request. ``classify_client_error``
maps aiohttp's failures onto reason codes with messages that never quote a URL
or header; a server that refuses the TLS client certificate is
AuthenticationFailed, since the certificate is a credential like a password.
"""

from __future__ import annotations

import email.utils
import re
import socket
import ssl
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from patchbay import __version__
from patchbay.api.reasons import Reason
from patchbay.core.egress import looks_like_address
from patchbay.drivers.base import DriverError, Egress, TlsMaterial, load_tls_material

USER_AGENT = f"patchbay/{__version__}"
# RFC 9110 says whole seconds; some APIs send a fraction (Shopify: "2.0")
_DELTA_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")
# TLS alerts (OpenSSL reason names) a server sends about the client's
# certificate: it refused the certificate, which is a credential like a password.
_CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_Found = TypeVar("_Found", bound=BaseException)


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


def egress_session(egress: Egress) -> aiohttp.ClientSession:
    """A session whose every new connection resolves through the egress policy.

    Use it as a context manager: that closes it also when the runner's timeout
    cancels the driver.
    """
    connector = aiohttp.TCPConnector(
        resolver=EgressResolver(egress),
        # Every new connection must pass the policy: no cached answers.
        use_dns_cache=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        # No proxies or netrc from the operator's environment.
        trust_env=False,
    )


async def check_ip_literal(egress: Egress, url: URL) -> None:
    """Put an IP-literal host to the egress policy: aiohttp does not call the resolver for it."""
    host = url.raw_host or ""
    if is_ip_literal(host):
        await egress.resolve(host, url.port or 0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds (a fraction too) or an
    HTTP date."""
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
    """Whether aiohttp may take the host for an address (``127.1`` too) and skip the resolver."""
    return looks_like_address(host)


def client_ssl_context(tls: TlsMaterial) -> ssl.SSLContext:
    """Runs in a thread: the system's roots plus the Connection's CA and client certificate."""
    context = ssl.create_default_context()
    load_tls_material(context, tls)
    return context


def _found_in(exc: BaseException, kind: type[_Found]) -> _Found | None:
    """An exception of the given kind that aiohttp wrapped into exc, or exc itself."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "os_error", None)
        pending += [current.__context__, current.__cause__]
        if isinstance(wrapped, BaseException):
            pending.append(wrapped)
    return None


def _os_detail(exc: OSError | None) -> str:
    if exc is None:
        return "connection failed"
    return exc.strerror or type(exc).__name__


def classify_client_error(exc: Exception) -> tuple[Reason, str, bool | None] | None:
    """Reason, safe detail and retryability for a failed request; None leaves it alone."""
    inner = _found_in(exc, DriverError)
    if inner is not None:
        return inner.code, inner.message, inner.retryable
    if isinstance(exc, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError):
        return Reason.TIMEOUT, "timed out", None
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        detail = getattr(cert_error, "verify_message", None) or type(cert_error).__name__
        return Reason.TLS_ERROR, f"TLS certificate verification failed: {detail}", None
    tls_error = _found_in(exc, ssl.SSLError)
    if tls_error is not None and tls_error.reason in _CLIENT_CERT_ALERTS:
        # With TLS 1.3 the server says so after the handshake, in place of a response.
        return (
            Reason.AUTHENTICATION_FAILED,
            f"the server refused the TLS client certificate ({tls_error.reason})",
            None,
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return Reason.TLS_ERROR, f"TLS handshake failed: {_os_detail(exc.os_error)}", None
    if tls_error is not None:
        return Reason.TLS_ERROR, f"TLS error: {tls_error.reason or type(tls_error).__name__}", None
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
