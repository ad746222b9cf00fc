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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from patchbay.api.connector import AuthSpec, CheckSpec, HttpRequestSpec
from patchbay.reasons import NOT_RETRYABLE, Reason

ResultKind = Literal["Succeeded", "Failed", "Unknown"]
ConfigValue = str | int | bool
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A check that failed for one of these reasons did not learn anything about
# the capability it tests, so its result is Unknown rather than Failed.
INCONCLUSIVE = frozenset(
    {Reason.HOST_UNREACHABLE, Reason.TIMEOUT, Reason.RATE_LIMITED, Reason.PROVIDER_ERROR}
)


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


def config_text(request: VerifyRequest, key: str, default: str | None = None) -> str:
    """A variable's value as text; CONFIG_INVALID when missing without a default."""
    value = request.value(key)
    if value is None or value == "":
        if default is None:
            raise DriverError(Reason.CONFIG_INVALID, f"{key} is required")
        return default
    if isinstance(value, bool) or "\x00" in str(value):
        raise DriverError(Reason.CONFIG_INVALID, f"{key} has an invalid value")
    return str(value)


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
