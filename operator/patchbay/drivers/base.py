"""The driver interface: one small contract every protocol module implements.

A driver speaks one protocol. It receives resolved inputs, connects,
authenticates, runs the requested capability checks and returns a
``VerifyOutcome``. It maps its library's exceptions onto ``Reason`` codes by
raising ``DriverError``. The shared runner (``patchbay.verification``)
enforces the timeout, the egress policy (through ``Egress``), the rate limit,
and scrubs secret values from every message.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from patchbay.api.connector import AuthSpec, CheckSpec, HttpRequestSpec
from patchbay.reasons import NOT_RETRYABLE, Reason

ResultKind = Literal["Succeeded", "Failed", "Unknown"]
ConfigValue = str | int | bool
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TARGET_MAX = 200
# A check that failed for one of these reasons learnt nothing definite about the
# capability it tests, so its result is Unknown rather than Failed.
INCONCLUSIVE = frozenset({Reason.TIMEOUT, Reason.RATE_LIMITED, Reason.HOST_UNREACHABLE})
NO_RESULT_SET = "the query returned no result set; use a statement that returns rows, e.g. SELECT"


class DriverError(Exception):
    """A classified failure. ``message`` must already be safe to show a user."""

    def __init__(self, code: Reason, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = code not in NOT_RETRYABLE if retryable is None else retryable
        self.retry_after: float | None = None


class Egress(Protocol):
    """Resolves a host and applies the egress policy before any packet is sent."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Addresses to connect to; raises DriverError(EGRESS_DENIED) or (HOST_UNREACHABLE)."""
        ...


@dataclass(frozen=True)
class TlsMaterial:
    """PEM material from the Connection's spec.tls Secrets."""

    ca_pem: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class VerifyRequest:
    """Everything a driver needs. ``secrets`` holds credential values: never log them."""

    config: Mapping[str, ConfigValue]
    secrets: Mapping[str, str] = field(repr=False)
    auth: AuthSpec = field(default_factory=AuthSpec)
    checks: Sequence[CheckSpec] = ()
    http: HttpRequestSpec | None = None
    tls: TlsMaterial | None = field(default=None, repr=False)

    def value(self, key: str) -> ConfigValue | None:
        """A variable's value, secret or not."""
        if key in self.secrets:
            return self.secrets[key]
        return self.config.get(key)


@dataclass(frozen=True)
class CheckOutcome:
    type: str
    target: str
    result: ResultKind
    code: Reason
    message: str = ""


@dataclass(frozen=True)
class VerifyOutcome:
    """What a verification found. An Unknown result never makes a Connection Ready."""

    result: ResultKind
    code: Reason
    message: str = ""
    retryable: bool = True
    server_version: str | None = None
    latency_ms: int | None = None
    checks: tuple[CheckOutcome, ...] = ()
    retry_after: float | None = None


class Driver(Protocol):
    """A protocol module. ``name`` is the value of Connector.spec.driver."""

    name: str

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        """Connect, authenticate and run the checks; raise DriverError for classified failures.

        Must not block the event loop: blocking libraries run in a thread.
        """
        ...


def summarize_checks(
    checks: Sequence[CheckOutcome],
    *,
    server_version: str | None,
    latency_ms: int | None,
) -> VerifyOutcome:
    """Overall outcome after a successful login: Verified only when every check passed."""
    failed = [c for c in checks if c.result != "Succeeded"]
    if not failed:
        return VerifyOutcome(
            result="Succeeded",
            code=Reason.VERIFIED,
            message="connected and authenticated"
            + (f"; {len(checks)} check(s) passed" if checks else ""),
            server_version=server_version,
            latency_ms=latency_ms,
            checks=tuple(checks),
        )
    first = failed[0]
    return VerifyOutcome(
        result="Failed" if first.result == "Failed" else "Unknown",
        code=first.code,
        message=f"check {first.type} {first.target}: {first.message}",
        retryable=first.code not in NOT_RETRYABLE,
        server_version=server_version,
        latency_ms=latency_ms,
        checks=tuple(checks),
    )


async def resolve_address(egress: Egress, host: str, port: int) -> IPAddress:
    """The address to connect to, approved by the egress policy before any packet is sent."""
    addresses = await egress.resolve(host, port)
    if not addresses:
        raise DriverError(Reason.HOST_UNREACHABLE, f"{host} has no addresses")
    return addresses[0]


def config_text(request: VerifyRequest, key: str, default: str | None = None) -> str:
    """A variable as text; without a default, an empty or missing value is ConfigInvalid."""
    value = request.value(key)
    if value is None or value == "":
        if default is None:
            raise DriverError(Reason.CONFIG_INVALID, f"{key} is required")
        return default
    if isinstance(value, bool) or "\x00" in str(value):
        raise DriverError(Reason.CONFIG_INVALID, f"{key} has an invalid value")
    return str(value)


def config_port(request: VerifyRequest, default: int) -> int:
    """The ``port`` variable, or the protocol's default port."""
    value = request.value("port")
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not str(value).isdigit() or not 0 < int(value) < 65536:
        raise DriverError(Reason.CONFIG_INVALID, f"port {value!r} is not a valid port")
    return int(value)


def check_target(check: CheckSpec) -> str:
    """What a check looks at, as shown in status: SQL, table, path or request path."""
    if check.type == "query":
        return (check.sql or "")[:TARGET_MAX]
    if check.type == "http":
        return check.http.path if check.http else ""
    return (check.table if check.type == "table" else check.path) or ""


def sql_check_subject(check: CheckSpec, driver: str) -> str:
    """The SQL of a query check or the name of a table check; other checks are ConfigInvalid."""
    if check.type == "query" and check.sql and check.sql.strip():
        return check.sql
    if check.type == "table" and check.table:
        return check.table
    if check.type in ("query", "table"):
        needs = "sql" if check.type == "query" else "table"
        raise DriverError(Reason.CONFIG_INVALID, f"a {check.type} check needs {needs}")
    raise DriverError(
        Reason.CONFIG_INVALID, f"check type {check.type} is not supported by the {driver} driver"
    )


def failed_check(check: CheckSpec, target: str, error: DriverError) -> CheckOutcome:
    result: ResultKind = "Unknown" if error.code in INCONCLUSIVE else "Failed"
    return CheckOutcome(check.type, target, result, error.code, error.message)


def load_tls_material(context: ssl.SSLContext, tls: TlsMaterial) -> None:
    """Trust the CA and present the client certificate of ``tls``.

    Runs in a thread: loading PEM material is blocking file and crypto work.
    """
    if tls.ca_pem:
        try:
            context.load_verify_locations(cadata=tls.ca_pem)
        except (ssl.SSLError, ValueError):
            raise DriverError(
                Reason.CONFIG_INVALID, "the TLS CA certificate is not valid PEM"
            ) from None
    if not (tls.client_cert_pem or tls.client_key_pem):
        return
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
