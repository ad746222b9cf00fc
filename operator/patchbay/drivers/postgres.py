"""PostgreSQL driver: log in over the wire protocol (psycopg async) and run read-only checks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import psycopg
from psycopg import sql

from patchbay.api.connector import CheckSpec
from patchbay.drivers.base import (
    CheckOutcome,
    DriverError,
    Egress,
    ResultKind,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
    config_text,
    summarize_checks,
)
from patchbay.reasons import Reason

Connection = psycopg.AsyncConnection[Any]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The runner's asyncio timeout is the real limit; this only keeps libpq from waiting forever.
CONNECT_TIMEOUT_SECONDS = 300
TARGET_MAX = 200

_BY_SQLSTATE: dict[str, Reason] = {
    "28P01": Reason.AUTHENTICATION_FAILED,  # invalid_password
    "28000": Reason.AUTHENTICATION_FAILED,  # invalid_authorization_specification
    "3D000": Reason.RESOURCE_NOT_FOUND,  # invalid_catalog_name: no such database
    "3F000": Reason.RESOURCE_NOT_FOUND,  # invalid_schema_name
    "42P01": Reason.RESOURCE_NOT_FOUND,  # undefined_table
    "42501": Reason.PERMISSION_DENIED,  # insufficient_privilege
    "53300": Reason.RATE_LIMITED,  # too_many_connections
    "08P01": Reason.PROTOCOL_ERROR,  # protocol_violation
    "25006": Reason.CONFIG_INVALID,  # read_only_sql_transaction: the check SQL writes
    "57014": Reason.TIMEOUT,  # query_canceled, e.g. by the server's statement_timeout
}

# libpq reports connection failures as text without a SQLSTATE, so those are
# matched on libpq's and the server's (English) messages; the first match wins.
# Authentication comes before TLS because pg_hba messages may mention "SSL".
_BY_MESSAGE: tuple[tuple[re.Pattern[str], Reason], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"authentication failed|not permitted to log in|no pg_hba\.conf entry"
            r"|no password supplied|role \".*\" does not exist",
            Reason.AUTHENTICATION_FAILED,
        ),
        (r"database \".*\" does not exist", Reason.RESOURCE_NOT_FOUND),
        (r"permission denied", Reason.PERMISSION_DENIED),
        (
            r"too many connections|too many clients|connection slots are reserved",
            Reason.RATE_LIMITED,
        ),
        # A server that is not PostgreSQL; before TLS, which the first one mentions.
        (
            r"invalid response to ssl negotiation|expected authentication request"
            r"|server closed the connection unexpectedly|unexpected message|invalid message"
            r"|lost synchronization",
            Reason.PROTOCOL_ERROR,
        ),
        (r"\bssl|certificate|\btls\b", Reason.TLS_ERROR),
        (
            r"connection refused|no route to host|network is unreachable|host is down"
            r"|could not translate host name|connection timed out",
            Reason.HOST_UNREACHABLE,
        ),
        (r"timeout expired", Reason.TIMEOUT),
        (r"protocol", Reason.PROTOCOL_ERROR),
    )
)
# libpq prefixes every attempt with 'connection to server at "HOST", port P failed: '.
_ATTEMPT_PREFIX = re.compile(r"^.*?connection to server at .*? failed: ", re.DOTALL)
_SEVERITY = re.compile(r"^(?:FATAL|ERROR|PANIC):\s+")
# Outcomes that say nothing definite about the checked capability.
_TRANSIENT = frozenset({Reason.TIMEOUT, Reason.RATE_LIMITED, Reason.HOST_UNREACHABLE})


def _describe(exc: psycopg.Error) -> str:
    """The server's primary message, else the first line of libpq's own, without conninfo."""
    if exc.diag.message_primary:
        return exc.diag.message_primary
    text = _ATTEMPT_PREFIX.sub("", str(exc)).removeprefix("connection failed: ").strip()
    text = _SEVERITY.sub("", text)
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _classify(exc: psycopg.Error, context: str = "") -> DriverError:
    message = _describe(exc)
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        code: Reason | None = Reason.TIMEOUT
    elif exc.sqlstate:
        code = _BY_SQLSTATE.get(exc.sqlstate, Reason.PROVIDER_ERROR)
    else:
        code = next((r for p, r in _BY_MESSAGE if p.search(message)), None)
    return DriverError(code or Reason.PROVIDER_ERROR, f"{context}{message}")


def _port(request: VerifyRequest) -> int:
    value = request.value("port")
    if value is None or value == "":
        return 5432
    if isinstance(value, bool) or not str(value).isdigit() or not 0 < int(value) < 65536:
        raise DriverError(Reason.CONFIG_INVALID, f"port {value!r} is not a valid port")
    return int(value)


@contextlib.contextmanager
def _tls_params(tls: TlsMaterial | None, sslmode: str) -> Iterator[dict[str, str]]:
    """libpq reads TLS material only from files: private ones, removed afterwards."""
    params: dict[str, str] = {}
    if sslmode == "verify-full":
        # Without a CA of its own, verify against the system's roots rather than
        # libpq's default ~/.postgresql/root.crt (which does not exist here).
        params["sslrootcert"] = "system"
    pems = {
        "sslrootcert": tls.ca_pem if tls else None,
        "sslcert": tls.client_cert_pem if tls else None,
        "sslkey": tls.client_key_pem if tls else None,
    }
    if not any(pems.values()):
        yield params
        return
    # Small local writes: libpq itself reads these files synchronously while connecting.
    directory = tempfile.mkdtemp(prefix="patchbay-postgres-")
    try:
        for key, pem in pems.items():
            if pem:
                path = os.path.join(directory, f"{key}.pem")
                with os.fdopen(
                    os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w"
                ) as f:
                    f.write(pem)
                params[key] = path
        yield params
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _target(check: CheckSpec) -> str:
    if check.type == "query":
        return (check.sql or "")[:TARGET_MAX]
    if check.type == "http":
        return check.http.path if check.http else ""
    return (check.table if check.type == "table" else check.path) or ""


def _generator(rows: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    return cast("AsyncGenerator[Any, None]", rows)  # stream() is one, though typed loosely


async def _query(conn: Connection, text: str) -> None:
    # stream() uses the extended protocol, which refuses several statements in one
    # string, so "select 1; commit; delete ..." cannot escape the read-only transaction.
    # Rows arrive one by one: reading on to the end of a one-row result spares a cancel
    # request, and a second row means there are more, so stop there.
    seen = 0
    # aclosing: an abandoned stream would keep holding the connection's lock.
    async with (
        conn.cursor() as cur,
        contextlib.aclosing(_generator(cur.stream(text.encode()))) as rows,
    ):
        try:
            async for _ in rows:
                seen += 1
                if seen > 1:
                    break
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate:
                raise
            raise DriverError(
                Reason.CONFIG_INVALID,
                "the query returned no result set; use a statement that returns rows, e.g. SELECT",
            ) from None


async def _table(conn: Connection, name: str) -> None:
    schema, _, table = name.rpartition(".")
    # limit 0 still checks the SELECT privilege, but reads nothing.
    query = sql.SQL("select 1 from {} limit 0").format(sql.Identifier(schema or "public", table))
    await conn.execute(query)


async def _run_check(conn: Connection, check: CheckSpec) -> CheckOutcome:
    target = _target(check)
    error: DriverError | None = None
    try:
        if check.type == "query" and check.sql and check.sql.strip():
            await _query(conn, check.sql)
        elif check.type == "table" and check.table:
            await _table(conn, check.table)
        elif check.type in ("query", "table"):
            needs = "sql" if check.type == "query" else "table"
            raise DriverError(Reason.CONFIG_INVALID, f"a {check.type} check needs {needs}")
        else:
            raise DriverError(
                Reason.CONFIG_INVALID,
                f"check type {check.type} is not supported by the postgres driver",
            )
    except psycopg.Error as exc:
        error = _classify(exc)
    except DriverError as exc:
        error = exc
    if error is None:
        await conn.rollback()
        return CheckOutcome(check.type, target, "Succeeded", Reason.VERIFIED, "ok")
    if conn.broken:  # nothing more can be checked over this connection
        raise error
    # Not in a finally: after a cancellation a rollback could wait on a hung server.
    await conn.rollback()
    result: ResultKind = "Unknown" if error.code in _TRANSIENT else "Failed"
    return CheckOutcome(check.type, target, result, error.code, error.message)


def _server_version(conn: Connection) -> str:
    reported = conn.info.parameter_status("server_version")  # e.g. "15.4 (Debian 15.4-1)"
    if reported and reported.split():
        return f"PostgreSQL {reported.split()[0]}"
    number = conn.info.server_version
    return f"PostgreSQL {number // 10000}.{number % 10000}"


class PostgresDriver:
    name = "postgres"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        host, port = config_text(request, "host"), _port(request)
        database, username = config_text(request, "database"), config_text(request, "username")
        password = config_text(request, "password", "")
        sslmode = config_text(request, "sslmode", "prefer")
        if sslmode not in SSL_MODES:
            raise DriverError(
                Reason.CONFIG_INVALID, f"sslmode must be one of {', '.join(SSL_MODES)}"
            )
        # The policy decides on the address actually used; libpq still checks TLS
        # against the name given in host.
        addresses = await egress.resolve(host, port)
        if not addresses:
            raise DriverError(Reason.HOST_UNREACHABLE, f"{host} has no addresses")
        server_name = request.tls.server_name if request.tls else None
        # Errors are raised outside the except blocks so that psycopg's exception does
        # not ride along as __context__: its .pgconn holds (and its repr shows) the password.
        error: DriverError | None = None
        with _tls_params(request.tls, sslmode) as tls:
            started = time.monotonic()
            try:
                conn = await psycopg.AsyncConnection.connect(
                    host=server_name or host,
                    hostaddr=str(addresses[0]),
                    port=port,
                    dbname=database,
                    user=username,
                    password=password,
                    sslmode=sslmode,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    application_name="patchbay",
                    # Never pick up the operator's own ~/.pgpass or a GSSAPI ticket.
                    passfile=os.devnull,
                    gssencmode="disable",
                    sslrootcert=tls.get("sslrootcert"),  # None values are left out
                    sslcert=tls.get("sslcert"),
                    sslkey=tls.get("sslkey"),
                )
            except psycopg.Error as exc:
                error = _classify(exc, f"cannot log in to {host} port {port}: ")
            if error is not None:
                raise error
            latency_ms = round((time.monotonic() - started) * 1000)
            try:
                await conn.set_read_only(True)
                checks = [await _run_check(conn, check) for check in request.checks]
                version = _server_version(conn)
            except psycopg.Error as exc:
                error = _classify(exc)
            finally:
                await conn.close()  # only closes the socket: safe after a cancellation
            if error is not None:
                raise error
        return summarize_checks(checks, server_version=version, latency_ms=latency_ms)
