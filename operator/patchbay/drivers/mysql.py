"""MySQL and MariaDB driver: log in over the MySQL protocol (aiomysql), run read-only checks,
and browse tables, columns and rows for the CLI (``SqlBrowsing``).

aiomysql's connection is used through a small subclass that
- refuses to send anything about the account before TLS when TLS is required,
- never sends a password in clear text over an unencrypted connection, and
- turns off multi-statement queries, so "select 1; commit; delete ..." cannot
  run past a check's read-only transaction.

SQL from a user (a query check, the CLI's ``query``) is never run as given. The server
prepares it (COM_STMT_PREPARE), which parses it and says its columns without running it;
what runs is a SELECT over it as a common table expression, which cuts every value to the
read cap on the server (see ``_capped``). So only a query runs: ``commit``, ``set session
transaction read write``, DDL (whose implicit commit would end the read-only transaction)
and every other statement are refused before anything runs, and the query runs in a
``START TRANSACTION READ ONLY`` that is always rolled back, in a session that is read-only
too. Every statement gets the server's statement time limit (MariaDB's
``max_statement_time``, MySQL's ``max_execution_time``) of what remains of the caller's
timeout, and when the caller's timeout cancels a check, a second login kills the running
statement (``KILL QUERY``), since the server would not notice the closed connection before
the statement ends. Queries need MySQL 8.0 or MariaDB 10.2 (common table expressions).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import aiomysql
import pymysql
from pymysql.constants import CLIENT, COMMAND, CR, FIELD_TYPE, FLAG
from pymysql.protocol import FieldDescriptorPacket

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
    load_tls_material,
    resolve_address,
)
from patchbay.drivers.checks import SessionLost, run_checks
from patchbay.workers import run_cpu

T = TypeVar("T")

# MySQL's own names for its client's --ssl-mode.
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
DEFAULT_PORT = 3306
# A SELECT without a LIMIT of its own returns at most this many rows to a query check.
QUERY_ROW_LIMIT = 1
# How long the second login that kills a statement after a cancellation may take.
KILL_TIMEOUT_SECONDS = 5.0
ONLY_QUERIES = (
    "only a query may run here: SELECT or WITH ... SELECT "
    "(statements that write, end transactions or change settings are refused)"
)
_SYNTAX_ERROR = 1064  # ER_PARSE_ERROR
_UNKNOWN_VARIABLE = 1193  # ER_UNKNOWN_SYSTEM_VARIABLE

_BY_ERRNO: dict[int, Reason] = {
    1045: Reason.AUTHENTICATION_FAILED,  # ER_ACCESS_DENIED_ERROR: wrong user or password
    1698: Reason.AUTHENTICATION_FAILED,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1130: Reason.AUTHENTICATION_FAILED,  # ER_HOST_NOT_PRIVILEGED: not from this client host
    1251: Reason.AUTHENTICATION_FAILED,  # ER_NOT_SUPPORTED_AUTH_MODE
    1820: Reason.AUTHENTICATION_FAILED,  # ER_MUST_CHANGE_PASSWORD: the password has expired
    1862: Reason.AUTHENTICATION_FAILED,  # ER_MUST_CHANGE_PASSWORD_LOGIN
    3118: Reason.AUTHENTICATION_FAILED,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
    4151: Reason.AUTHENTICATION_FAILED,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB)
    CR.CR_AUTH_PLUGIN_CANNOT_LOAD: Reason.AUTHENTICATION_FAILED,  # unsupported login method
    # The server also answers 1044 for a database that does not exist, unless the
    # account has privileges that would cover it: it does not reveal which.
    1044: Reason.PERMISSION_DENIED,  # ER_DBACCESS_DENIED_ERROR
    1142: Reason.PERMISSION_DENIED,  # ER_TABLEACCESS_DENIED_ERROR
    1143: Reason.PERMISSION_DENIED,  # ER_COLUMNACCESS_DENIED_ERROR
    1227: Reason.PERMISSION_DENIED,  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    1370: Reason.PERMISSION_DENIED,  # ER_PROCACCESS_DENIED_ERROR
    1049: Reason.RESOURCE_NOT_FOUND,  # ER_BAD_DB_ERROR
    1146: Reason.RESOURCE_NOT_FOUND,  # ER_NO_SUCH_TABLE
    1040: Reason.RATE_LIMITED,  # ER_CON_COUNT_ERROR: too many connections
    1203: Reason.RATE_LIMITED,  # ER_TOO_MANY_USER_CONNECTIONS
    1226: Reason.RATE_LIMITED,  # ER_USER_LIMIT_REACHED: an account's hourly limits
    1129: Reason.RATE_LIMITED,  # ER_HOST_IS_BLOCKED: too many failed connections
    1792: Reason.CONFIG_INVALID,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: the check SQL writes
    1205: Reason.TIMEOUT,  # ER_LOCK_WAIT_TIMEOUT
    1317: Reason.TIMEOUT,  # ER_QUERY_INTERRUPTED
    1969: Reason.TIMEOUT,  # ER_STATEMENT_TIMEOUT (MariaDB's max_statement_time)
    3024: Reason.TIMEOUT,  # ER_QUERY_TIMEOUT (MySQL's max_execution_time)
    3159: Reason.TLS_ERROR,  # ER_SECURE_TRANSPORT_REQUIRED (MySQL)
    1043: Reason.PROTOCOL_ERROR,  # ER_HANDSHAKE_ERROR
    1047: Reason.PROTOCOL_ERROR,  # ER_UNKNOWN_COM_ERROR
    CR.CR_SERVER_LOST: Reason.PROTOCOL_ERROR,  # the server hung up mid-exchange
    CR.CR_SERVER_GONE_ERROR: Reason.PROTOCOL_ERROR,
    CR.CR_COMMANDS_OUT_OF_SYNC: Reason.PROTOCOL_ERROR,
    CR.CR_MALFORMED_PACKET: Reason.PROTOCOL_ERROR,
}
# MariaDB reports require_secure_transport as 1290, a code it shares with other server options.
_OPTION_PREVENTS_STATEMENT = 1290
_SECURE_TRANSPORT = re.compile(r"secure[-_ ]transport", re.IGNORECASE)
# What aiomysql raises when a peer's handshake is not MySQL's.
_MALFORMED_HANDSHAKE = (struct.error, IndexError, ValueError, KeyError, UnicodeDecodeError)
_HUNG_UP = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def _os_error(exc: OSError) -> tuple[Reason, str]:
    # ssl fills in verify_message and reason only for errors that OpenSSL raised.
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or reason
        return Reason.TLS_ERROR, f"TLS certificate verification failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        return Reason.TLS_ERROR, f"TLS handshake failed: {reason}"
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "the connection timed out"
    if isinstance(exc, _HUNG_UP):
        return Reason.PROTOCOL_ERROR, "the server closed the connection during the handshake"
    detail = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return Reason.HOST_UNREACHABLE, f"cannot connect: {detail}"


def _classify(exc: pymysql.err.MySQLError, context: str = "") -> DriverError:
    """A reason for a server or client error; server messages never contain the password."""
    args = exc.args
    number = args[0] if len(args) == 2 and isinstance(args[0], int) else None
    message = str(args[1] if number is not None else (args[0] if args else type(exc).__name__))
    cause = exc.__cause__
    if number == CR.CR_CONN_HOST_ERROR and isinstance(cause, OSError):
        # aiomysql wraps socket and TLS failures of the connection phase in one error.
        code, message = _os_error(cause)
    elif number is not None and number in _BY_ERRNO:
        code = _BY_ERRNO[number]
    elif number == _OPTION_PREVENTS_STATEMENT and _SECURE_TRANSPORT.search(message):
        code = Reason.TLS_ERROR
    elif number is None and isinstance(exc, pymysql.err.InternalError | pymysql.err.InterfaceError):
        code = Reason.PROTOCOL_ERROR  # e.g. "Packet sequence number wrong"
    else:
        code = Reason.PROVIDER_ERROR
    server_code = str(number) if number is not None else None
    return DriverError(code, f"{context}{message}", server_code=server_code)


class _ServerNameContext(ssl.SSLContext):
    """Checks the server certificate against ``server_name``.

    aiomysql names the address it connects to as the TLS server name; that is the
    address the egress policy approved, but the certificate must match the host
    name the Connection gave (or its spec.tls.serverName).
    """

    server_name: str | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        name = self.server_name or server_hostname
        return super().wrap_bio(incoming, outgoing, server_side, name, session)


def _ssl_context(sslmode: str, tls: TlsMaterial | None, server_name: str) -> ssl.SSLContext:
    """Runs in a thread: loading certificates is blocking file and crypto work."""
    context = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    if sslmode in ("PREFERRED", "REQUIRED"):
        # Encryption without authenticating the server, as MySQL's own client does.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = sslmode == "VERIFY_IDENTITY"
        if not (tls and tls.ca_pem):
            context.load_default_certs()
    if tls is not None:
        load_tls_material(context, tls)
    return context


class _Connection(aiomysql.Connection):  # type: ignore[misc]  # aiomysql has no type hints
    def __init__(self, *, require_tls: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_flag &= ~CLIENT.MULTI_STATEMENTS
        self._require_tls = require_tls

    def _will_encrypt(self) -> bool:
        return bool(self._ssl_context and self.server_capabilities & CLIENT.SSL)

    def declined_offered_tls(self) -> bool:
        """The server offered TLS, but sslmode DISABLED logged in without it."""
        offered = getattr(self, "server_capabilities", 0) & CLIENT.SSL  # set by the greeting
        return bool(offered) and not self._ssl_context

    async def _request_authentication(self) -> None:
        # Runs after the server's greeting and before anything about the account is sent.
        if self._require_tls and not self._will_encrypt():
            raise DriverError(Reason.TLS_ERROR, "the server does not support TLS")
        if self._server_auth_plugin == "mysql_clear_password" and not self._will_encrypt():
            raise _clear_text_refused()
        await super()._request_authentication()

    async def _process_auth(self, plugin_name: bytes, auth_packet: Any) -> Any:
        if plugin_name == b"mysql_clear_password" and not self._secure:
            raise _clear_text_refused()
        return await super()._process_auth(plugin_name, auth_packet)


def _clear_text_refused() -> DriverError:
    return DriverError(
        Reason.AUTHENTICATION_FAILED,
        "the server asked for the password in clear text over an unencrypted connection; "
        "not sent (use TLS)",
    )


async def _log_in(conn: _Connection, context: str) -> None:
    # Errors are raised outside the except blocks so that no library exception, whose
    # traceback holds the connection and its password, rides along as __context__.
    error: DriverError | None = None
    try:
        await conn._connect()
    except pymysql.err.MySQLError as exc:
        error = _classify(exc, context)
    except _MALFORMED_HANDSHAKE:
        error = DriverError(
            Reason.PROTOCOL_ERROR, f"{context}the server did not answer as a MySQL server"
        )
    if (
        error is not None
        and error.code == Reason.AUTHENTICATION_FAILED
        and conn.declined_offered_tls()
    ):
        # MariaDB refuses an unencrypted login to a server that requires TLS as it
        # refuses a wrong password.
        error = DriverError(
            error.code,
            f"{error.message} (sent without TLS because sslmode is DISABLED; "
            "a server that requires TLS refuses such logins the same way)",
        )
    if error is not None:
        raise error


async def _execute(conn: _Connection, statement: str) -> None:
    error: DriverError | None = None
    try:
        await conn.query(statement)
    except pymysql.err.MySQLError as exc:
        error = _classify(exc)
    if error is not None:
        raise error


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


async def _fetch(
    conn: _Connection, statement: str, max_rows: int, args: Sequence[object] | None
) -> list[tuple[JsonValue, ...]]:
    """At most max_rows rows of one of the driver's own statements. User SQL goes through
    ``_fetch_capped``."""
    # Unbuffered: rows are read one by one. sql_select_limit makes the server stop one row
    # past max_rows for a SELECT without a LIMIT of its own; closing the cursor reads (and
    # drops) whatever a larger LIMIT still sends.
    cursor = await conn.cursor(aiomysql.SSCursor)
    await cursor.execute(statement, args)  # without arguments, "%" in the SQL is left alone
    rows: list[tuple[JsonValue, ...]] = []
    while (row := await cursor.fetchone()) is not None and len(rows) < max_rows:
        rows.append(tuple(json_value(v) for v in row))
    # Not in a finally: after a cancellation, reading the rest could wait on a hung server.
    await cursor.close()
    return rows


_NEAR = re.compile(r"near '(.+)' at line \d+", re.DOTALL)


def _stops_at_a_semicolon(statement: str, exc: pymysql.err.MySQLError) -> bool:
    """Whether the server's syntax error is at a statement after a semicolon: with
    multi-statements off, its parser stops there."""
    near = _NEAR.search(str(exc.args[1])) if exc.args[0] == _SYNTAX_ERROR else None
    if near is None:
        return False
    rest = near.group(1)
    start = statement.find(rest)
    while start != -1:
        if statement[:start].rstrip().endswith(";"):
            return True
        start = statement.find(rest, start + 1)
    return False


_BINARY_CHARSET = 63
# Bytes per character of the text a session of this driver receives: it asks for utf8mb4.
_RESULT_CHARACTER_BYTES = 4
# How MySQL and MariaDB spell the types of result columns; lengths and precision are added
# by ``type_name``. FIELD_TYPE names the protocol's codes.
_TYPE_NAMES = {
    FIELD_TYPE.TINY: "tinyint",
    FIELD_TYPE.SHORT: "smallint",
    FIELD_TYPE.INT24: "mediumint",
    FIELD_TYPE.LONG: "int",
    FIELD_TYPE.LONGLONG: "bigint",
    FIELD_TYPE.FLOAT: "float",
    FIELD_TYPE.DOUBLE: "double",
    FIELD_TYPE.NULL: "null",
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.DATE: "date",
    FIELD_TYPE.NEWDATE: "date",
    FIELD_TYPE.TIME: "time",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.YEAR: "year",
    FIELD_TYPE.JSON: "json",
    FIELD_TYPE.ENUM: "enum",
    FIELD_TYPE.SET: "set",
    FIELD_TYPE.GEOMETRY: "geometry",
}
_INTEGERS = (
    FIELD_TYPE.TINY,
    FIELD_TYPE.SHORT,
    FIELD_TYPE.INT24,
    FIELD_TYPE.LONG,
    FIELD_TYPE.LONGLONG,
)
_LOBS = (FIELD_TYPE.TINY_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB, FIELD_TYPE.BLOB)
# The largest tinytext, text and mediumtext (or blob), in characters; the rest are long.
_LOB_SIZES = ((255, "tiny"), (65_535, ""), (16_777_215, "medium"))


class ColumnDefinition(Protocol):
    """What the protocol says of a result column (pymysql's FieldDescriptorPacket)."""

    type_code: int
    flags: int
    length: int  # in bytes
    charsetnr: int
    scale: int


def type_name(field: ColumnDefinition) -> str:
    """A result column's type as the server spells it in a table's definition, from what the
    protocol says of it: "int unsigned", "varchar(40)", "decimal(10,2)", "mediumtext"."""
    code, flags, length = field.type_code, field.flags, field.length
    binary = field.charsetnr == _BINARY_CHARSET
    characters = length if binary else length // _RESULT_CHARACTER_BYTES
    unsigned = " unsigned" if flags & FLAG.UNSIGNED else ""
    if code in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        # The length counts the digits, the decimal point and a sign.
        precision = length - (1 if field.scale else 0) - (0 if unsigned else 1)
        return f"decimal({precision},{field.scale}){unsigned}"
    if code in _INTEGERS:
        return _TYPE_NAMES[code] + unsigned
    if code == FIELD_TYPE.BIT:
        return f"bit({length})"
    if code in (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING):
        return f"varbinary({length})" if binary else f"varchar({characters})"
    if code == FIELD_TYPE.STRING:  # ENUM and SET columns come as strings with a flag
        if flags & FLAG.ENUM:
            return "enum"
        if flags & FLAG.SET:
            return "set"
        return f"binary({length})" if binary else f"char({characters})"
    if code in _LOBS:
        size = next((name for limit, name in _LOB_SIZES if characters <= limit), "long")
        return size + ("blob" if binary else "text")
    return _TYPE_NAMES.get(code, f"type {code}")


async def _columns_of(conn: _Connection, statement: str) -> tuple[list[str], list[str]]:
    """The column names and types of one statement, which the server prepares (parses and
    describes) but does not run; a statement without columns is ConfigInvalid.

    aiomysql has no prepared statements, so this speaks the two commands itself.
    """
    await conn._execute_command(COMMAND.COM_STMT_PREPARE, statement)
    try:
        prepared = await conn._read_packet()  # an error packet raises the server's error
    except pymysql.err.ProgrammingError as exc:
        if not _stops_at_a_semicolon(statement, exc):
            raise
        message = f"{sql.ONE_STATEMENT} (the server says: {exc.args[1]})"
    else:
        message = ""
    if message:  # raised here, so that the library's exception does not ride along
        raise DriverError(Reason.CONFIG_INVALID, message)
    statement_id, columns, parameters = struct.unpack_from("<IHH", prepared.get_all_data(), 1)
    # Parameter then column definitions, each list ended by an EOF packet.
    for _ in range(parameters):
        await conn._read_packet()
    if parameters:
        await conn._read_packet()
    fields = [await conn._read_packet(FieldDescriptorPacket) for _ in range(columns)]
    if columns:
        await conn._read_packet()
    await conn._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", statement_id))
    if not columns:
        raise DriverError(Reason.CONFIG_INVALID, NO_RESULT_SET)
    if parameters:
        raise DriverError(Reason.CONFIG_INVALID, "placeholders (?) are not supported here")
    return [str(field.name) for field in fields], [type_name(field) for field in fields]


def _capped(statement: str, columns: int, cap: int) -> str:
    """A query over ``statement`` (as a common table expression) returning each of its
    values when it takes at most ``cap`` bytes, else NULL, and then each value over the cap
    cut to ``cap`` characters, else NULL (``sql.capped_columns``).

    So no value longer than that crosses the network, and only a query can run: the
    statement cannot end the expression and start another statement (multi-statements are
    off), and a query follows the expression, so nothing but a query parses.
    """
    names, kept, cut = sql.capped_columns(columns, cap)
    body = sql.without_trailing_semicolons(statement)
    return f"WITH q ({', '.join(names)}) AS (\n{body}\n) SELECT {', '.join(kept + cut)} FROM q"


async def _fetch_capped(
    conn: _Connection, statement: str, max_rows: int
) -> tuple[RowSet, int | None]:
    """At most max_rows rows of user SQL within the read caps (``sql.CappedRows``), and the
    per-value cap when a value was cut (else None)."""
    columns, types = await _columns_of(conn, statement)
    rows = sql.CappedRows(columns, types, max_rows)
    cursor = await conn.cursor(aiomysql.SSCursor)
    try:
        await cursor.execute(_capped(statement, len(columns), rows.cap))
    except pymysql.err.ProgrammingError as exc:
        if exc.args[0] != _SYNTAX_ERROR:
            raise
        # The statement prepared on its own but is no query: SHOW, EXPLAIN, CALL, or a
        # data-changing statement with RETURNING.
        refused = True
    else:
        refused = False
    if refused:  # raised here, so that the library's exception does not ride along
        raise DriverError(Reason.CONFIG_INVALID, ONLY_QUERIES)
    while (row := await cursor.fetchone()) is not None:
        if not rows.offer(row[: len(columns)], row[len(columns) :]):
            break
    # Not in a finally: after a cancellation, reading the rest could wait on a hung server.
    await cursor.close()
    return rows.result()


class _Session:
    """What a check or discovery call needs besides the connection: the server's kind and
    the time left."""

    def __init__(self, conn: _Connection, deadline: Deadline) -> None:
        self.conn = conn
        self.deadline = deadline
        self.mariadb = "mariadb" in conn.get_server_info().lower()

    async def begin(self, row_limit: int) -> None:
        """A read-only transaction whose statements the server stops when the caller's time
        is up, unless the account's own limit is shorter."""
        conn = self.conn
        # Again before each check, whatever a check before it did to the session.
        await conn.query("SET SESSION TRANSACTION READ ONLY")
        if self.mariadb:  # seconds, to the microsecond
            variable, limit = "max_statement_time", f"{self.deadline.remaining():.3f}"
        else:  # milliseconds, for SELECT statements (all that runs from a user)
            variable, limit = "max_execution_time", str(self.deadline.remaining_ms())
        try:
            await conn.query(
                f"SET SESSION {variable} = IF(@@{variable} = 0, {limit},"
                f" LEAST(@@{variable}, {limit}))"
            )
        except pymysql.err.MySQLError as exc:
            if exc.args[0] != _UNKNOWN_VARIABLE:  # a server too old to have the limit
                raise
        await conn.query(f"SET SESSION sql_select_limit = {row_limit}")
        # One transaction per check: a check that ends it ends only its own.
        await conn.query("START TRANSACTION READ ONLY")

    async def rolled_back(self, row_limit: int, work: Callable[[], Awaitable[T]]) -> T:
        """Await one check or discovery call in its own read-only transaction (``begin``),
        then roll that back.

        The library's errors come out classified; SessionLost when the connection closed,
        or the rollback failed, since nothing more can be done over it.
        """
        conn = self.conn
        error: DriverError | None = None
        try:
            await self.begin(row_limit)
            result = await work()
        except pymysql.err.MySQLError as exc:
            error = _classify(exc)
        except DriverError as exc:
            error = exc
        if error is not None and conn.closed:
            raise SessionLost.of(error)
        lost: SessionLost | None = None
        try:
            await _execute(conn, "ROLLBACK")
        except DriverError as exc:
            lost = SessionLost.of(exc)
        if lost is not None:  # raised here, so that the rollback's error does not ride along
            raise lost
        if error is not None:
            raise error
        return result


async def _table(conn: _Connection, name: str) -> None:
    schema, _, table = name.rpartition(".")
    qualified = f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)
    # LIMIT 0 still checks that the table exists and may be read, but reads nothing.
    await conn.query(f"SELECT 1 FROM {qualified} LIMIT 0")


class _Checks(sql.SqlChecks):
    """The driver's check functions over one session."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def read_query(self, statement: str) -> int | None:
        conn = self._session.conn
        _, cut_to = await self._session.rolled_back(
            QUERY_ROW_LIMIT, lambda: _fetch_capped(conn, statement, QUERY_ROW_LIMIT)
        )
        return cut_to

    async def read_table(self, name: str) -> None:
        await self._session.rolled_back(QUERY_ROW_LIMIT, lambda: _table(self._session.conn, name))


async def _kill_running_statement(open_second: Callable[[], _Connection], thread_id: int) -> None:
    """Log in again and kill what the connection ``thread_id`` runs; best effort, bounded.

    The server notices a closed connection only when the statement ends or sends rows.
    """
    second = open_second()
    try:
        async with asyncio.timeout(KILL_TIMEOUT_SECONDS):
            await second._connect()
            await second.query(f"KILL QUERY {int(thread_id)}")
            await second.ensure_closed()
    except Exception:
        pass  # nothing more can be done: the caller has given up already
    finally:
        second.close()


_VERSION_NUMBER = re.compile(r"(?:5\.5\.5-)?(\d+(?:\.\d+)*)")


def server_version(reported: str) -> str:
    """E.g. "MariaDB 10.11.6" from "5.5.5-10.11.6-MariaDB-0+deb12u1-log"."""
    product = "MariaDB" if "mariadb" in reported.lower() else "MySQL"
    # MariaDB before 11 prefixes "5.5.5-" for the sake of old replication clients.
    match = _VERSION_NUMBER.match(reported)
    return f"{product} {match.group(1) if match else reported[:64]}"


@contextlib.asynccontextmanager
async def _logged_in(
    request: VerifyRequest, egress: Egress
) -> AsyncIterator[tuple[_Connection, int]]:
    """A logged-in connection and the login's latency in milliseconds; closed on exit."""
    host, port = config_text(request, "host"), config_port(request, DEFAULT_PORT)
    database, username = config_text(request, "database"), config_text(request, "username")
    password = config_text(request, "password", "")
    sslmode = config_text(request, "sslmode", "PREFERRED").upper()
    if sslmode not in SSL_MODES:
        raise DriverError(Reason.CONFIG_INVALID, f"sslmode must be one of {', '.join(SSL_MODES)}")
    address = await resolve_address(egress, host, port)
    context: ssl.SSLContext | None = None
    if sslmode != "DISABLED":
        server_name = (request.tls.server_name if request.tls else None) or host.strip("[]")
        context = await run_cpu(_ssl_context, sslmode, request.tls, server_name)

    def connection() -> _Connection:
        return _Connection(
            require_tls=sslmode not in ("DISABLED", "PREFERRED"),
            host=str(address),
            port=port,
            user=username,
            # aiomysql sends the password encoded as latin-1; MySQL's own clients send
            # UTF-8, which this spelling makes aiomysql send too.
            password=password.encode().decode("latin-1"),
            db=database,
            ssl=context,
            charset="utf8mb4",
            autocommit=None,  # the server's default: one statement less
            local_infile=False,  # the server may not read the operator's files
            program_name="patchbay",
        )

    conn = connection()
    try:
        started = time.monotonic()
        await _log_in(conn, f"cannot log in to {host} port {port}: ")
        latency_ms = round((time.monotonic() - started) * 1000)
        try:
            yield conn, latency_ms
        except asyncio.CancelledError:
            conn.close()
            await _kill_running_statement(connection, conn.thread_id())
            raise
        await conn.ensure_closed()  # says goodbye, so the server logs no aborted connection
    finally:
        conn.close()  # only closes the socket: safe after a cancellation; idempotent


_SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
_TABLE_KINDS = {
    "BASE TABLE": "table",
    "VIEW": "view",
    "SYSTEM VIEW": "system view",
    "SEQUENCE": "sequence",
    "TEMPORARY": "temporary table",
}
# The server lists only tables on which the login holds some privilege.
_TABLES = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
    " WHERE %s OR TABLE_SCHEMA NOT IN ("
    + ", ".join(f"'{schema}'" for schema in _SYSTEM_SCHEMAS)
    + ") ORDER BY 1, 2"
)
_COLUMNS = (
    "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES', COLUMN_KEY = 'PRI'"
    " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    " ORDER BY ORDINAL_POSITION"
)


class MysqlSqlBrowser:
    """SqlBrowser over one connection; each call is its own read-only transaction."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def _run(self, fetch: Callable[[], Awaitable[T]], max_rows: int) -> T:
        # One row more than max_rows tells whether there are more.
        return await self._session.rolled_back(max_rows + 1, fetch)

    async def _catalog(
        self, statement: str, max_rows: int, args: Sequence[object]
    ) -> list[tuple[JsonValue, ...]]:
        conn = self._session.conn
        return await self._run(lambda: _fetch(conn, statement, max_rows, args), max_rows)

    async def _capped(self, statement: str, max_rows: int) -> RowSet:
        async def fetch() -> RowSet:
            rows, _ = await _fetch_capped(self._session.conn, statement, max_rows)
            return rows

        return await self._run(fetch, max_rows)

    async def tables(self, include_system: bool) -> list[TableInfo]:
        found = await self._catalog(_TABLES, sql.EVERY_ROW, (include_system,))
        return sql.table_infos(found, _TABLE_KINDS)

    async def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        found = await self._catalog(_COLUMNS, MAX_ROWS, (schema, table))
        if not found:  # a table has at least one column
            raise DriverError(Reason.RESOURCE_NOT_FOUND, f"table {schema}.{table} does not exist")
        return sql.column_infos(found)

    async def sample(self, schema: str, table: str, rows: int) -> RowSet:
        statement = f"SELECT * FROM {_quote(schema)}.{_quote(table)} LIMIT {rows + 1}"
        return await self._capped(statement, rows)

    async def query(self, statement: str, max_rows: int) -> RowSet:
        return await self._capped(statement, max_rows)


class MysqlDriver:
    name = "mysql"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        deadline = Deadline(request.timeout_seconds)
        async with _logged_in(request, egress) as (conn, latency_ms):
            version = server_version(conn.get_server_info())
            checks = _Checks(_Session(conn, deadline)).functions()
            results = await run_checks(self.name, request, checks, deadline)
        return results.outcome(server_version=version, latency_ms=latency_ms)

    @contextlib.asynccontextmanager
    async def browse_sql(self, request: VerifyRequest, egress: Egress) -> AsyncIterator[SqlBrowser]:
        deadline = Deadline(request.timeout_seconds)
        async with _logged_in(request, egress) as (conn, _):
            yield MysqlSqlBrowser(_Session(conn, deadline))


# Checked by mypy, as factory= below checks the Driver interface: the class can
# browse as its capabilities say.
_sql: SqlBrowsing = MysqlDriver()
DRIVER = DriverInfo(
    name=MysqlDriver.name,
    binding_type="mysql",
    default_port=DEFAULT_PORT,
    capabilities=frozenset({"verify", "sql"}),
    factory=MysqlDriver,
    binding_uri="database",
)
