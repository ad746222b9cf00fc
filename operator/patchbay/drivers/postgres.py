"""PostgreSQL driver: log in over the wire protocol (psycopg async), run read-only checks,
and browse tables, columns and rows for the CLI (``SqlBrowsing``).

SQL from a user (a query check, the CLI's ``query``) is never run as given. The server
parses and describes it without running it; what runs is a SELECT over it as a subquery,
which cuts every value to the read cap on the server (see ``_capped``). So only a query
runs: ``commit``, ``set transaction read write``, ``prepare``, DDL and every other
statement are refused before anything runs, and the query runs in a read-only
transaction that is always rolled back. Each transaction gets a ``statement_timeout`` of
what remains of the caller's timeout, and psycopg cancels a running statement on the
server when the caller's timeout cancels the task.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any, TypeVar, cast

import psycopg
from psycopg import generators, pq
from psycopg import sql as pgsql
from psycopg.abc import Query

from patchbay.api.reasons import Reason
from patchbay.drivers import sql
from patchbay.drivers.base import (
    MAX_ROWS,
    NO_RESULT_SET,
    ColumnInfo,
    Deadline,
    DriverError,
    DriverInfo,
    Egress,
    JsonValue,
    RowSet,
    SqlBrowser,
    SqlBrowsing,
    TableInfo,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
    config_port,
    config_text,
    json_value,
    resolve_address,
)
from patchbay.drivers.checks import SessionLost, run_checks
from patchbay.drivers.pem import pem_files

Connection = psycopg.AsyncConnection[Any]
T = TypeVar("T")

DEFAULT_PORT = 5432
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The runner's asyncio timeout is the real limit; this only keeps libpq from waiting forever.
CONNECT_TIMEOUT_SECONDS = 300
ONLY_QUERIES = (
    "only a query may run here: SELECT, VALUES, TABLE or WITH ... SELECT "
    "(statements that write, end transactions or change settings are refused)"
)

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
        # libpq refused the method the server asked for (requireAuth): nothing was sent
        (r"authentication method requirement", Reason.CONFIG_INVALID),
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
# libpq's require_auth: methods, each possibly negated with "!", comma-separated
_REQUIRE_AUTH = re.compile(r"!?[a-z0-9-]{1,32}(,!?[a-z0-9-]{1,32}){0,7}")
# libpq prefixes every attempt with 'connection to server at "HOST", port P failed: '.
_ATTEMPT_PREFIX = re.compile(r"^.*?connection to server at .*? failed: ", re.DOTALL)
_SEVERITY = re.compile(r"^(?:FATAL|ERROR|PANIC):\s+")


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
    return DriverError(
        code or Reason.PROVIDER_ERROR, f"{context}{message}", server_code=exc.sqlstate
    )


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
    # Small local writes: libpq itself reads these files synchronously while connecting.
    with pem_files("patchbay-postgres-", pems) as paths:
        yield {**params, **paths}


def _generator(rows: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    return cast("AsyncGenerator[Any, None]", rows)  # stream() is one, though typed loosely


async def _fetch(
    conn: Connection, query: Query, max_rows: int, params: Mapping[str, Any] | None = None
) -> list[tuple[JsonValue, ...]]:
    """At most max_rows rows of one of the driver's own statements. User SQL goes through
    ``_fetch_capped``."""
    # stream() uses the extended protocol, which refuses several statements in one string.
    # Rows arrive one by one: reading on to the end of a result of max_rows rows spares a
    # cancel request, so stop only at a row past those.
    rows: list[tuple[JsonValue, ...]] = []
    # aclosing: an abandoned stream would keep holding the connection's lock.
    async with (
        conn.cursor() as cur,
        contextlib.aclosing(_generator(cur.stream(query, params))) as stream,
    ):
        async for row in stream:
            if len(rows) == max_rows:
                break
            rows.append(tuple(json_value(v) for v in row))
    return rows


# Lowers statement_timeout for the rest of the transaction to what remains of the caller's
# timeout, unless the server's own setting (e.g. the role's) is shorter already.
_LIMIT_TIME = (
    "select pg_catalog.set_config('statement_timeout', %(ms)s::text, true)"
    " from pg_catalog.pg_settings where name = 'statement_timeout'"
    " and (setting::bigint = 0 or setting::bigint > %(ms)s)"
)


async def _limit_time(conn: Connection, deadline: Deadline) -> None:
    """Start a transaction whose statements the server stops when the caller's time is up."""
    await conn.execute(_LIMIT_TIME, {"ms": deadline.remaining_ms()})


_SEVERAL_STATEMENTS = re.compile(r"multiple commands", re.IGNORECASE)


def _raise_for(conn: Connection, results: list[pq.abc.PGresult]) -> pq.abc.PGresult:
    result = results[-1]
    if result.status != pq.ExecStatus.FATAL_ERROR:
        return result
    error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if _SEVERAL_STATEMENTS.search(error.diag.message_primary or ""):
        raise DriverError(Reason.CONFIG_INVALID, sql.ONE_STATEMENT)
    raise error


async def _described(conn: Connection, statement: bytes) -> pq.abc.PGresult:
    """The columns of one statement, which the server parses and describes (Parse and
    Describe messages) but does not run; a statement without columns is ConfigInvalid."""
    pgconn = conn.pgconn
    async with conn.lock:
        # The unnamed prepared statement: the next Parse replaces it, nothing to clean up.
        pgconn.send_prepare(b"", statement)
        _raise_for(conn, await conn.wait(generators.execute(pgconn)))
        pgconn.send_describe_prepared(b"")
        described = _raise_for(conn, await conn.wait(generators.execute(pgconn)))
    if not described.nfields:
        raise DriverError(Reason.CONFIG_INVALID, NO_RESULT_SET)
    return described


def _column_names(conn: Connection, described: pq.abc.PGresult) -> tuple[str, ...]:
    encoding = conn.info.encoding
    return tuple(
        (described.fname(i) or b"").decode(encoding, "replace") for i in range(described.nfields)
    )


async def _type_names(conn: Connection, described: pq.abc.PGresult) -> tuple[str, ...]:
    """The described columns' types as ``format_type`` spells them, as ``columns`` does."""
    calls = pgsql.SQL(", ").join(
        pgsql.SQL("pg_catalog.format_type({}::oid, {})").format(
            pgsql.Literal(described.ftype(i)), pgsql.Literal(described.fmod(i))
        )
        for i in range(described.nfields)
    )
    (row,) = await _fetch(conn, pgsql.SQL("select {}").format(calls), 1)
    return tuple(str(name) for name in row)


def _capped(statement: bytes, columns: int, cap: int) -> bytes:
    """A query over ``statement`` (as a subquery) returning each of its values when its text
    takes at most ``cap`` bytes, else NULL, and, last, an array of the values over the cap
    cut to ``cap`` characters (``sql.capped_columns``).

    So no value longer than that crosses the network, and only a query can run: the SQL
    cannot end the subquery and start another statement (the extended protocol takes one),
    and what starts with "select ... from (" can only be a SELECT. OFFSET 0 keeps the
    planner from computing the user's expressions once per reference.
    """
    names, kept, cut = sql.capped_columns(columns, cap, qualifier="q.", as_text="::text")
    head = f"select {', '.join(kept)}, array[{', '.join(cut)}] from (select * from (\n"
    tail = f"\n) as u offset 0) as q ({', '.join(names)})"
    return head.encode() + sql.without_trailing_semicolons(statement) + tail.encode()


async def _fetch_capped(
    conn: Connection, statement: bytes, max_rows: int, deadline: Deadline, *, typed: bool
) -> tuple[RowSet, int | None]:
    """At most max_rows rows of user SQL within the read caps (``sql.CappedRows``), and the
    per-value cap when a value was cut (else None). The columns' types are looked up only
    when ``typed``: a check does not show them."""
    await _limit_time(conn, deadline)
    described = await _described(conn, statement)
    columns = _column_names(conn, described)
    types = await _type_names(conn, described) if typed else ()
    rows = sql.CappedRows(columns, types, max_rows)
    capped = _capped(statement, len(columns), rows.cap)
    started = refused = False
    async with (
        conn.cursor() as cur,
        contextlib.aclosing(_generator(cur.stream(capped))) as stream,
    ):
        try:
            async for row in stream:
                started = True
                *values, cut_texts = row
                if not rows.offer(values, cut_texts):
                    break
        except (psycopg.errors.SyntaxError, psycopg.errors.FeatureNotSupported):
            if started:
                raise
            # The statement parsed on its own but is no query: INSERT ... RETURNING, SHOW,
            # EXPLAIN, EXECUTE, FETCH, or WITH around a data-modifying statement.
            refused = True
    if refused:  # raised here, so that psycopg's exception does not ride along
        raise DriverError(Reason.CONFIG_INVALID, ONLY_QUERIES)
    return rows.result()


async def _table(conn: Connection, name: str, deadline: Deadline) -> None:
    schema, _, table = name.rpartition(".")
    # limit 0 still checks the SELECT privilege, but reads nothing.
    query = pgsql.SQL("select 1 from {} limit 0").format(
        pgsql.Identifier(schema or "public", table)
    )
    await _limit_time(conn, deadline)
    await conn.execute(query)


async def _rolled_back(conn: Connection, work: Awaitable[T]) -> T:
    """Await one check or discovery call in its own transaction, then roll that back.

    psycopg's errors come out classified; SessionLost when the connection broke, since
    nothing more can be done over it.
    """
    error: DriverError | None = None
    try:
        result = await work
    except psycopg.Error as exc:
        error = _classify(exc)
    except DriverError as exc:
        error = exc
    if not conn.broken:
        # Not in a finally: after a cancellation a rollback could wait on a hung server.
        try:
            await conn.rollback()
        except psycopg.Error as exc:
            error = error or _classify(exc)
    if error is not None:  # raised here, so that psycopg's exception does not ride along
        raise SessionLost.of(error) if conn.broken else error
    return result


class _Checks(sql.SqlChecks):
    """The driver's check functions over one read-only connection."""

    def __init__(self, conn: Connection, deadline: Deadline) -> None:
        self._conn = conn
        self._deadline = deadline

    async def read_query(self, statement: str) -> int | None:
        _, cut_to = await _rolled_back(
            self._conn,
            _fetch_capped(self._conn, statement.encode(), 1, self._deadline, typed=False),
        )
        return cut_to

    async def read_table(self, name: str) -> None:
        await _rolled_back(self._conn, _table(self._conn, name, self._deadline))


def _server_version(conn: Connection) -> str:
    reported = conn.info.parameter_status("server_version")  # e.g. "15.4 (Debian 15.4-1)"
    if reported and reported.split():
        return f"PostgreSQL {reported.split()[0]}"
    number = conn.info.server_version
    return f"PostgreSQL {number // 10000}.{number % 10000}"


@contextlib.asynccontextmanager
async def _logged_in(
    request: VerifyRequest, egress: Egress
) -> AsyncIterator[tuple[Connection, int]]:
    """A read-only connection and the login's latency in milliseconds; closed on exit."""
    host, port = config_text(request, "host"), config_port(request, DEFAULT_PORT)
    database, username = config_text(request, "database"), config_text(request, "username")
    password = config_text(request, "password", "")
    sslmode = config_text(request, "sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise DriverError(Reason.CONFIG_INVALID, f"sslmode must be one of {', '.join(SSL_MODES)}")
    require_auth = config_text(request, "requireAuth", "")
    if require_auth and not _REQUIRE_AUTH.fullmatch(require_auth):
        raise DriverError(
            Reason.CONFIG_INVALID,
            "requireAuth must be libpq's require_auth list, e.g. scram-sha-256",
        )
    # The policy decides on the address actually used; libpq still checks TLS
    # against the name given in host.
    address = await resolve_address(egress, host, port)
    server_name = request.tls.server_name if request.tls else None
    # Errors are raised outside the except blocks so that psycopg's exception does
    # not ride along as __context__: its .pgconn holds (and its repr shows) the password.
    error: DriverError | None = None
    with _tls_params(request.tls, sslmode) as tls:  # libpq reads the files while connecting
        started = time.monotonic()
        try:
            conn = await psycopg.AsyncConnection.connect(
                host=server_name or host,
                hostaddr=str(address),
                port=port,
                dbname=database,
                user=username,
                password=password,
                sslmode=sslmode,
                # the methods libpq may answer with: scram-sha-256 never shows the server
                # the password, so a server asking for it in clear text gets nothing
                require_auth=require_auth or None,
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
        try:
            await conn.set_read_only(True)
        except psycopg.Error as exc:
            error = _classify(exc)
        if error is not None:
            raise error
        yield conn, latency_ms
    finally:
        await conn.close()  # only closes the socket: safe after a cancellation


_TABLE_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}
_SYSTEM_SCHEMA = (
    "(n.nspname in ('pg_catalog', 'information_schema') or n.nspname like 'pg\\_toast%%'"
    " or n.nspname like 'pg\\_temp\\_%%')"
)
_TABLES = (
    "select n.nspname, c.relname, c.relkind::text"
    " from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
    " where c.relkind in ('r', 'p', 'v', 'm', 'f')"
    " and pg_catalog.has_table_privilege(c.oid, 'SELECT')"
    f" and (%(include_system)s or not {_SYSTEM_SCHEMA})"
    " order by 1, 2"
)
_TABLE_OID = (
    "select c.oid from pg_catalog.pg_class c"
    " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
    " where n.nspname = %(schema)s and c.relname = %(table)s"
    " and c.relkind in ('r', 'p', 'v', 'm', 'f')"
)
_COLUMNS = (
    "select a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), not a.attnotnull,"
    " exists (select 1 from pg_catalog.pg_index i"
    " where i.indrelid = a.attrelid and i.indisprimary and a.attnum = any(i.indkey))"
    " from pg_catalog.pg_attribute a"
    " where a.attrelid = %(oid)s and a.attnum > 0 and not a.attisdropped"
    " order by a.attnum"
)


class PostgresSqlBrowser:
    """SqlBrowser over one read-only connection; each call is its own transaction."""

    def __init__(self, conn: Connection, deadline: Deadline) -> None:
        self._conn = conn
        self._deadline = deadline

    async def _catalog(
        self, query: Query, max_rows: int, params: Mapping[str, Any] | None = None
    ) -> list[tuple[JsonValue, ...]]:
        async def fetch() -> list[tuple[JsonValue, ...]]:
            await _limit_time(self._conn, self._deadline)
            return await _fetch(self._conn, query, max_rows, params)

        return await _rolled_back(self._conn, fetch())

    async def _capped(self, statement: bytes, max_rows: int) -> RowSet:
        async def fetch() -> RowSet:
            rows, _ = await _fetch_capped(
                self._conn, statement, max_rows, self._deadline, typed=True
            )
            return rows

        return await _rolled_back(self._conn, fetch())

    async def tables(self, include_system: bool) -> list[TableInfo]:
        found = await self._catalog(_TABLES, sql.EVERY_ROW, {"include_system": include_system})
        return sql.table_infos(found, _TABLE_KINDS)

    async def _oid(self, schema: str, table: str) -> int:
        found = await self._catalog(_TABLE_OID, 1, {"schema": schema, "table": table})
        if not found:
            raise DriverError(Reason.RESOURCE_NOT_FOUND, f"table {schema}.{table} does not exist")
        return int(cast("int", found[0][0]))

    async def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        oid = await self._oid(schema, table)
        return sql.column_infos(await self._catalog(_COLUMNS, MAX_ROWS, {"oid": oid}))

    async def sample(self, schema: str, table: str, rows: int) -> RowSet:
        # One row more than asked for tells whether the table has more.
        query = pgsql.SQL("select * from {} limit {}").format(
            pgsql.Identifier(schema, table), pgsql.Literal(rows + 1)
        )
        return await self._capped(query.as_bytes(self._conn), rows)

    async def query(self, statement: str, max_rows: int) -> RowSet:
        return await self._capped(statement.encode(), max_rows)


class PostgresDriver:
    name = "postgres"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        deadline = Deadline(request.timeout_seconds)
        async with _logged_in(request, egress) as (conn, latency_ms):
            version = _server_version(conn)
            checks = _Checks(conn, deadline).functions()
            results = await run_checks(self.name, request, checks, deadline)
        return results.outcome(server_version=version, latency_ms=latency_ms)

    @contextlib.asynccontextmanager
    async def browse_sql(self, request: VerifyRequest, egress: Egress) -> AsyncIterator[SqlBrowser]:
        deadline = Deadline(request.timeout_seconds)
        async with _logged_in(request, egress) as (conn, _):
            yield PostgresSqlBrowser(conn, deadline)


# Checked by mypy, as factory= below checks the Driver interface: the class can
# browse as its capabilities say.
_sql: SqlBrowsing = PostgresDriver()
DRIVER = DriverInfo(
    name=PostgresDriver.name,
    binding_type="postgresql",
    default_port=DEFAULT_PORT,
    capabilities=frozenset({"verify", "sql"}),
    factory=PostgresDriver,
    binding_uri="database",
)
