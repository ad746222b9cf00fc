"""The driver interface: one small contract every protocol module implements.

A driver speaks one protocol. It receives resolved inputs, connects,
authenticates, runs the requested capability checks through the shared check
runner (``patchbay.drivers.checks``) and returns a ``VerifyOutcome``. It maps
its library's exceptions onto ``Reason`` codes by raising ``DriverError``. The
verification runner (``patchbay.core.verification``) enforces the timeout, the egress
policy (through ``Egress``), the rate limit, and scrubs secret values from every
message.

Drivers may also offer discovery, used by the CLI: ``SqlBrowsing`` (tables,
columns, samples, read-only queries) and ``FileBrowsing`` (listing and
selection checks). Each opens a session over one login; the caller
(``patchbay.cli.discovery``) enforces the timeout and the connector's rate limit
(``RequestBudget``) and scrubs messages, as for verification. The SaaS file APIs
of http connectors browse through ``patchbay.drivers.saasfiles``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import ipaddress
import json
import math
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, runtime_checkable

from patchbay.api.connector import (
    AuthSpec,
    CheckSpec,
    CredentialPlacement,
    HttpErrorRule,
    HttpRequestSpec,
)
from patchbay.api.limits import MAX_TIMEOUT_SECONDS
from patchbay.api.reasons import NOT_RETRYABLE, Reason
from patchbay.drivers.pem import pem_files

ResultKind = Literal["Succeeded", "Failed", "Unknown"]
ConfigValue = str | int | bool
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NO_RESULT_SET = "the query returned no result set; use a statement that returns rows, e.g. SELECT"


class DriverError(Exception):
    """A classified failure. ``message`` must already be safe to show a user."""

    def __init__(
        self,
        code: Reason,
        message: str,
        *,
        retryable: bool | None = None,
        server_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # the server's own error code (SQLSTATE, error number), where it has one
        self.server_code = server_code
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
    # The last this many checks come from the Connection, not its connector: their
    # author may not read what the server says (a query's error can quote data).
    connection_checks: int = 0
    http: HttpRequestSpec | None = None
    http_errors: Sequence[HttpErrorRule] = ()
    tls: TlsMaterial | None = field(default=None, repr=False)
    # Seconds the whole verification (or discovery session) may take. Drivers give the
    # server the same limit, so that a statement the caller gave up on does not run on;
    # None means the ceiling, MAX_TIMEOUT_SECONDS.
    timeout_seconds: float | None = None
    # Secret values the system issued during the verification in place of given ones, by
    # variable: a rotated refresh token. The old value may no longer work, so the caller
    # keeps these, also when the verification then fails.
    issued: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # A Connection's own place for its bearer token or API key (http driver).
    credential_placement: CredentialPlacement | None = None
    # Keep the OAuth 2.0 access token the verification obtains in ``granted``, as
    # ACCESS_TOKEN_KEY and, when the token endpoint says, EXPIRES_AT_KEY (RFC 3339, UTC).
    keep_access_token: bool = False
    granted: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def value(self, key: str) -> ConfigValue | None:
        """A variable's value, secret or not."""
        if key in self.secrets:
            return self.secrets[key]
        return self.config.get(key)


# Keys of an access token a verification obtained, as the binding Secret carries them.
ACCESS_TOKEN_KEY = "accessToken"
EXPIRES_AT_KEY = "accessTokenExpiresAt"
EXPIRES_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


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


def config_text(request: VerifyRequest, key: str, default: str | None = None) -> str:
    """A variable's value as text; ConfigInvalid when it is missing and has no default."""
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


def secret_text(request: VerifyRequest, key: str) -> str:
    """A credential's value; SecretKeyMissing when the credentials do not have it."""
    value = request.value(key)
    if value is None or value == "":
        raise DriverError(
            Reason.SECRET_KEY_MISSING, f"the credentials have no value for variable {key}"
        )
    return str(value)


class Driver(Protocol):
    """A protocol module. ``name`` is the value of Connector.spec.driver."""

    name: str

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        """Connect, authenticate and run the checks; raise DriverError for classified failures.

        Must not block the event loop: blocking libraries run in a thread.
        """
        ...


# What a driver can do besides verifying: browse a SQL database (``SqlBrowsing``) or
# files (``FileBrowsing``) for the CLI.
Capability = Literal["verify", "sql", "files"]
# What the ``uri`` key of a driver's binding Secret holds: a database URL
# (<binding type>://user:password@host:port/database), the ``baseUrl`` variable, or nothing.
BindingUri = Literal["database", "baseUrl"]


@dataclass(frozen=True)
class DriverInfo:
    """A driver's registration: everything the operator needs to know of it besides its code.

    Each driver module declares its own, next to its class; ``patchbay.drivers.registry``
    collects them, and the CRD, the binding Secret and the CLI take what they need from
    there, so that adding a driver touches its module and one line of the registry.
    """

    name: str  # the value of Connector.spec.driver
    binding_type: str  # the Service Binding `type` of its binding Secret
    default_port: int | None  # the port when a Connection gives none; None: its URL says
    capabilities: frozenset[Capability]
    factory: Callable[[], Driver]
    binding_uri: BindingUri | None = None


async def resolve_address(egress: Egress, host: str, port: int) -> IPAddress:
    """The address to connect to, approved by the egress policy before any packet is sent."""
    addresses = await egress.resolve(host, port)
    if not addresses:
        raise DriverError(Reason.HOST_UNREACHABLE, f"{host} has no addresses")
    return addresses[0]


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
    # ssl can load a key only from a file: it exists only for the moment it takes.
    with pem_files(
        "patchbay-tls-", {"tls.crt": tls.client_cert_pem, "tls.key": tls.client_key_pem}
    ) as paths:
        try:
            context.load_cert_chain(paths["tls.crt"], paths["tls.key"])
        except (ssl.SSLError, ValueError):
            raise DriverError(
                Reason.CONFIG_INVALID,
                "the TLS client certificate or key is not valid PEM, or they do not match",
            ) from None


# ----- discovery ---------------------------------------------------------------------

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

# Limits the CLI enforces before a driver sees the request, so every driver can rely on them.
MAX_SQL_LENGTH = 10_000
MAX_ROWS = 10_000

# What one query check or discovery query or sample may read, so that no result can exhaust
# the memory of the operator or the CLI: a value keeps at most MAX_VALUE_BYTES (fewer in wide
# rows, so that one row always fits MAX_RESULT_BYTES), and reading stops once the rows kept
# reach MAX_RESULT_BYTES. Drivers cut long values on the server where the database allows
# it, so that they never cross the network whole; each driver says what it bounds.
MAX_VALUE_BYTES = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024


def json_value(value: object) -> JsonValue:
    """A database value as JSON: exact numbers and binary data become text, times ISO 8601."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


def value_cap(columns: int) -> int:
    """Bytes each value of a row of ``columns`` values keeps: MAX_VALUE_BYTES, or fewer so
    that the whole row fits MAX_RESULT_BYTES."""
    return max(1, min(MAX_VALUE_BYTES, MAX_RESULT_BYTES // max(1, columns)))


def capped_value(value: object, cap: int) -> tuple[JsonValue, bool]:
    """``value`` as JSON with text or binary data cut to ``cap`` bytes, and whether it was cut.

    Text is cut at a character boundary, so it may keep a few bytes fewer than ``cap``.
    """
    if isinstance(value, str):
        data = value.encode()
        if len(data) > cap:
            return data[:cap].decode(errors="ignore"), True
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) > cap:
            return json_value(data[:cap]), True
    return json_value(value), False


def json_size(value: JsonValue) -> int:
    """The bytes ``value`` takes in a result: text by its UTF-8 length, the rest as JSON."""
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value))


class RowCollector:
    """The rows of one result, offered one at a time as they are read, until ``max_rows``
    rows or MAX_RESULT_BYTES are kept. ``truncated`` when rows were left out or a value cut."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows: list[tuple[JsonValue, ...]] = []
        self.size = 0
        self.truncated = False
        self.values_cut = False

    def offer(self, row: Sequence[JsonValue], cut: bool = False) -> bool:
        """Keep ``row`` unless the result is full; False tells the caller to stop reading."""
        size = sum(json_size(v) for v in row)
        if len(self.rows) >= self.max_rows or self.size + size > MAX_RESULT_BYTES:
            self.truncated = True
            return False
        self.rows.append(tuple(row))
        self.size += size
        if cut:
            self.truncated = self.values_cut = True
        return True

    def result(self, columns: Sequence[str], types: Sequence[str]) -> RowSet:
        return RowSet(tuple(columns), tuple(types), tuple(self.rows), self.truncated)


class Deadline:
    """When the caller's timeout runs out, for drivers to hand to the server.

    Counted from the start of the verification or discovery session; the server gets what
    remains, so that it stops a statement by itself when the caller stops waiting for it.
    """

    def __init__(self, seconds: float | None) -> None:
        limit = MAX_TIMEOUT_SECONDS if seconds is None else min(seconds, MAX_TIMEOUT_SECONDS)
        self._end = time.monotonic() + max(limit, 0.0)

    def remaining(self) -> float:
        """Seconds left, at least a millisecond (a zero limit means none to most servers)."""
        return max(self._end - time.monotonic(), 0.001)

    def remaining_ms(self) -> int:
        return math.ceil(self.remaining() * 1000)

    def expired(self) -> bool:
        return time.monotonic() >= self._end


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    kind: str  # table, view, materialized view, foreign table, partitioned table


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # as the database spells it, e.g. "character varying(20)"
    nullable: bool
    primary_key: bool


@dataclass(frozen=True)
class RowSet:
    """Rows of a sample or query; ``truncated`` when the source had more than were returned,
    or a value was cut."""

    columns: tuple[str, ...]
    types: tuple[str, ...]  # each column's type as the database spells it, e.g. "integer"
    rows: tuple[tuple[JsonValue, ...], ...]
    truncated: bool


class SqlBrowser(Protocol):
    """A session on a SQL database. Every call runs in a transaction of its own that is
    rolled back, read-only where the database has read-only transactions."""

    async def tables(self, include_system: bool) -> list[TableInfo]:
        """Tables and views the login may read; system schemas only when asked."""
        ...

    async def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        """Columns in table order; DriverError(RESOURCE_NOT_FOUND) for an unknown table."""
        ...

    async def sample(self, schema: str, table: str, rows: int) -> RowSet:
        """Up to ``rows`` rows of the table, in no particular order."""
        ...

    async def query(self, sql: str, max_rows: int) -> RowSet:
        """One statement (at most MAX_SQL_LENGTH characters) returning at most ``max_rows`` rows.

        Only a query runs: anything else is refused before it runs (ConfigInvalid), or a
        write fails with the database's read-only error.
        """
        ...


@runtime_checkable
class SqlBrowsing(Protocol):
    """A driver that can browse a SQL database."""

    name: str

    def browse_sql(
        self, request: VerifyRequest, egress: Egress
    ) -> AbstractAsyncContextManager[SqlBrowser]:
        """Log in (through the egress policy) and yield a session; closing it logs out."""
        ...


FileKind = Literal["file", "directory"]


@dataclass(frozen=True)
class FileEntry:
    name: str
    kind: FileKind
    path: str  # what to pass to list_files or validate_selection
    size: int | None = None  # bytes, for files
    modified: datetime.datetime | None = None
    # The system's own ID of the item where it has them (the SaaS file APIs), which
    # list_files also takes in place of the path; None where paths are the only names.
    id: str | None = None
    mime_type: str | None = None

    @property
    def ref(self) -> str:
        """What names this entry to list_files for sure: its ID, else its path."""
        return self.id or self.path


@dataclass(frozen=True)
class FilePage:
    entries: tuple[FileEntry, ...]
    next_page_token: str | None = None  # None on the last page


@dataclass(frozen=True)
class SelectionLimits:
    """Limits a selection is checked against; None means no limit."""

    max_items: int | None = None
    max_bytes: int | None = None
    max_depth: int | None = None


ViolationCode = Literal["NotFound", "TooManyItems", "TooManyBytes", "TooDeep"]


@dataclass(frozen=True)
class SelectionViolation:
    code: ViolationCode
    path: str
    message: str


@dataclass(frozen=True)
class SelectionReport:
    """Totals over the selected files. ``complete`` is False when the walk stopped at a limit,
    so the totals count only what was seen until then."""

    total_items: int
    total_bytes: int
    max_depth: int
    violations: tuple[SelectionViolation, ...] = ()
    complete: bool = True

    @property
    def valid(self) -> bool:
        """The selection is within every limit: nothing missing, nothing exceeded."""
        return not self.violations


class FileBrowser(Protocol):
    """A session on a file system or object store."""

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        """One page of the entries directly under ``path`` ("" is the driver's root);
        ``path`` may also be an entry's ``id``.

        Listing a file's own path yields that file alone, with the path as given.
        DriverError(RESOURCE_NOT_FOUND) when nothing exists at ``path``.
        """
        ...

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        """Totals and limit violations of the selected files and directories (recursively).

        ``walk_selection`` implements this for any browser in terms of ``list_files``.
        """
        ...


@runtime_checkable
class FileBrowsing(Protocol):
    """A driver that can browse files."""

    name: str

    def browse_files(
        self, request: VerifyRequest, egress: Egress
    ) -> AbstractAsyncContextManager[FileBrowser]:
        """Log in (through the egress policy) and yield a session; closing it logs out."""
        ...


class RequestBudget(Protocol):
    """The connector's rateLimit as the caller enforces it on a discovery session."""

    async def spend(self) -> None:
        """Return once one more request to the system is within the budget."""
        ...


class _Stop(Exception):
    """A limit was exceeded: the walk ends there."""


# The deepest a walk goes without a smaller max_depth: deeper trees are TooDeep.
MAX_WALK_DEPTH = 64


async def walk_selection(
    browser: FileBrowser, paths: Sequence[str], limits: SelectionLimits
) -> SelectionReport:
    """Walk every selected path with ``list_files``, stopping at the first exceeded limit.

    Items are files; a selected file is at depth 0, the entries of a selected directory at
    depth 1, and so on. Entries are known by ``ref`` (their ID where the system has IDs):
    a file selected twice (directly and through its directory) counts once, and a
    directory reached twice (a message under two Gmail labels) is walked once.
    """
    seen: set[str] = set()
    walked: set[str] = set()
    total_bytes = max_depth = 0
    violations: list[SelectionViolation] = []
    deepest = MAX_WALK_DEPTH if limits.max_depth is None else min(limits.max_depth, MAX_WALK_DEPTH)

    def exceed(code: ViolationCode, path: str, message: str) -> None:
        violations.append(SelectionViolation(code, path, message))
        raise _Stop

    def count(entry: FileEntry, depth: int) -> None:
        nonlocal total_bytes, max_depth
        max_depth = max(max_depth, depth)
        if depth > deepest:
            exceed("TooDeep", entry.path, f"deeper than {deepest} levels")
        if entry.kind != "file" or entry.ref in seen:
            return
        seen.add(entry.ref)
        total_bytes += entry.size or 0
        if limits.max_items is not None and len(seen) > limits.max_items:
            exceed("TooManyItems", entry.path, f"more than {limits.max_items} items")
        if limits.max_bytes is not None and total_bytes > limits.max_bytes:
            exceed("TooManyBytes", entry.path, f"more than {limits.max_bytes} bytes")

    async def walk(ref: str, depth: int) -> None:
        token: str | None = None
        while True:
            page = await browser.list_files(ref, token)
            for entry in page.entries:
                if entry.kind == "file" and ref in (entry.path, entry.id):
                    count(entry, depth - 1)  # the selected path is itself a file
                    continue
                count(entry, depth)
                if entry.kind == "directory" and entry.ref not in walked:
                    walked.add(entry.ref)
                    await walk(entry.ref, depth + 1)
            token = page.next_page_token
            if token is None:
                return

    complete = True
    for selected in paths:
        try:
            await walk(selected, 1)
        except DriverError as exc:
            if exc.code != Reason.RESOURCE_NOT_FOUND:
                raise
            violations.append(SelectionViolation("NotFound", selected, exc.message))
        except _Stop:
            complete = False
            break
    return SelectionReport(len(seen), total_bytes, max_depth, tuple(violations), complete)
