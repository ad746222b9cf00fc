"""Microsoft SQL Server driver: log in over TDS (python-tds), run checks, and browse
tables, columns and rows for the CLI (``SqlBrowsing``).

python-tds blocks, so the login and each check run in a thread. The driver opens the
socket itself, to the address the egress policy approved, and hands it to python-tds,
which would otherwise resolve the host name on its own; the host name is kept for TLS.
A thread cannot be cancelled: when the caller's timeout cancels the verification, the
socket is shut down, which makes any read or write the thread is blocked in fail at
once, so the thread ends, and the server, which always listens for a cancellation
(attention) on the connection, ends the session and its running batch.

SQL Server has no server-side statement timeout: its clients send an attention when
they stop waiting. So before each check the socket's timeout is set to what remains of
the caller's timeout; when it runs out, python-tds sends the attention, the server stops
the batch, and the check ends as Timeout, after which no further check runs over the
session. Lock waits end there too (SET LOCK_TIMEOUT).

SQL Server has no read-only transaction either, so the SQL of a query check is judged
before it is sent (``refusal``): one SELECT or WITH ... SELECT statement, without words
that write, end or begin transactions, run other code or reach other servers. On top of
that, each check runs inside a transaction that is always rolled back, and
@@TRANCOUNT afterwards shows whether the check ended it. Give the login read
permissions only all the same: a CLR function with external access, say, is beyond
what a driver can judge.

A check reads at most one row per statement (SET ROWCOUNT 1); the server cuts
varchar(max), nvarchar(max), varbinary(max), text and image values (SET TEXTSIZE) and
the driver cuts every value to the read cap, saying so in the check's message. xml and
CLR-type values, which SET TEXTSIZE does not cut, are refused: the server describes a
query check's statement first. Other values are at most 8,000 bytes each; python-tds
holds one row whole.

Discovery works the same way: each call runs in its own transaction, always rolled back.
The CLI's ``query`` is judged by ``refusal`` before anything is sent; then the server
describes the statement without running it (sys.dm_exec_describe_first_result_set), which
gives the columns' types and refuses a statement without a result set, and the statement
runs with SET ROWCOUNT one row past the row limit and SET TEXTSIZE just past the per-value
cap. xml and CLR-type values are read as text cut on the server in ``sample`` and refused
in ``query``, as in query checks (CAST them to nvarchar(max)).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import OpenSSL.SSL
import pytds
from pytds import tds_base
from pytds.tds_socket import _TdsSocket

from patchbay.api.connector import CheckSpec
from patchbay.api.reasons import Reason
from patchbay.drivers import sql
from patchbay.drivers.base import (
    MAX_VALUE_BYTES,
    NO_RESULT_SET,
    ColumnInfo,
    Deadline,
    DriverError,
    DriverInfo,
    Egress,
    IPAddress,
    JsonValue,
    RowSet,
    SqlBrowser,
    SqlBrowsing,
    TableInfo,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
    capped_value,
    config_port,
    config_text,
    json_value,
    load_tls_material,
    resolve_address,
    secret_text,
    value_cap,
)
from patchbay.drivers.checks import SessionLost, check_subject, ok_message, run_checks
from patchbay.drivers.pem import pem_files
from patchbay.workers import run_cpu

T = TypeVar("T")

DEFAULT_PORT = 1433
# yes: the whole session over TLS, the certificate checked; no: no TLS at all.
ENCRYPT_MODES = ("yes", "no")
# The caller's timeout is the real limit (it shuts the socket down); this only bounds
# each socket operation should that ever fail to happen.
SOCKET_TIMEOUT_SECONDS = 120.0
# TDS carries these as at most 128 UTF-16 characters.
NAME_MAX = 128
# Bytes of a large-object value the server sends (SET TEXTSIZE); the driver then cuts every
# value to the read cap. Larger than the cap, so that a cut shows.
TEXT_SIZE = 4 * MAX_VALUE_BYTES
ONE_STATEMENT = "only one statement may run here, not several separated by semicolons"
ONLY_QUERIES = "only a query may run here: SELECT or WITH ... SELECT"

_BY_NUMBER: dict[int, Reason] = {
    18456: Reason.AUTHENTICATION_FAILED,  # login failed: wrong user or password
    18452: Reason.AUTHENTICATION_FAILED,  # login from an untrusted domain
    18470: Reason.AUTHENTICATION_FAILED,  # the login is disabled
    18486: Reason.AUTHENTICATION_FAILED,  # the login is locked out
    18487: Reason.AUTHENTICATION_FAILED,  # the password has expired
    18488: Reason.AUTHENTICATION_FAILED,  # the password must be changed
    # Cannot open database: SQL Server says so whether the database does not exist or
    # the login has no user in it, and does not reveal which.
    4060: Reason.RESOURCE_NOT_FOUND,
    911: Reason.RESOURCE_NOT_FOUND,  # database does not exist
    208: Reason.RESOURCE_NOT_FOUND,  # invalid object name: no such table or view
    916: Reason.PERMISSION_DENIED,  # the login may not access the database
    229: Reason.PERMISSION_DENIED,  # permission denied on an object
    230: Reason.PERMISSION_DENIED,  # permission denied on a column
    262: Reason.PERMISSION_DENIED,  # permission denied in the database (e.g. CREATE)
    297: Reason.PERMISSION_DENIED,  # the user may not perform this action
    300: Reason.PERMISSION_DENIED,  # a server permission is missing (e.g. VIEW SERVER STATE)
    3906: Reason.CONFIG_INVALID,  # the database is read-only: the check SQL writes
    17809: Reason.RATE_LIMITED,  # the maximum number of user connections is reached
    10928: Reason.RATE_LIMITED,  # Azure SQL: a resource limit is reached
}
_CANNOT_OPEN_DATABASE = 4060
# Login errors arrive as several messages, of which python-tds keeps the number of the
# last ("login failed") and the text of all: "cannot open database" shows only there.
_CANNOT_OPEN_DATABASE_TEXT = re.compile(r"Cannot open database ", re.IGNORECASE)
_TLS_TEXT = re.compile(r"encryption|certificate", re.IGNORECASE)
# What a reply that is not TDS makes python-tds's parser raise.
_MALFORMED = (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError)


@dataclass(frozen=True)
class _Login:
    host: str
    port: int
    server_name: str  # the name the certificate must carry, and the login packet's
    database: str
    username: str
    password: str = field(repr=False)
    encrypt: bool
    ca_pem: str | None


def _login(request: VerifyRequest) -> _Login:
    host, port = config_text(request, "host"), config_port(request, DEFAULT_PORT)
    if "\\" in host:
        # A named instance needs a UDP lookup to the SQL Server Browser: give the port.
        raise DriverError(
            Reason.CONFIG_INVALID, "host names an instance (host\\instance); give its port"
        )
    database, username = config_text(request, "database"), config_text(request, "username")
    password = secret_text(request, "password")
    for key, value in (("database", database), ("username", username), ("password", password)):
        if len(value) > NAME_MAX:
            raise DriverError(Reason.CONFIG_INVALID, f"{key} is longer than {NAME_MAX} characters")
    encrypt = config_text(request, "encrypt", "yes").lower()
    if encrypt not in ENCRYPT_MODES:
        raise DriverError(
            Reason.CONFIG_INVALID, f"encrypt must be one of {', '.join(ENCRYPT_MODES)}"
        )
    tls = request.tls or TlsMaterial()
    if tls.client_cert_pem or tls.client_key_pem:
        raise DriverError(
            Reason.CONFIG_INVALID, "SQL Server logins do not use a TLS client certificate"
        )
    return _Login(
        host=host,
        port=port,
        server_name=tls.server_name or host.strip("[]"),
        database=database,
        username=username,
        password=password,
        encrypt=encrypt == "yes",
        ca_pem=tls.ca_pem,
    )


def _tls_reason(exc: OpenSSL.SSL.Error) -> str:
    """OpenSSL's last reason, e.g. "certificate verify failed"."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(e[-1]) for e in errors if isinstance(e, tuple) and e]
    return reasons[-1] if reasons else "the TLS handshake failed"


class _Rerouted(Exception):
    """The server answered the login with a route to another server."""

    def __init__(self, server: str, port: int) -> None:
        super().__init__(f"{server}:{port}")
        self.server, self.port = server, port


def _login_without_routing(tds_socket: _TdsSocket) -> None:
    """python-tds follows a login route by opening its own socket to the new host,
    which the egress policy never sees, and sends the login there again: refuse it."""
    route = _route_following_login(tds_socket)
    if route is not None:
        raise _Rerouted(str(route["server"]), int(route["port"]))


_route_following_login = _TdsSocket.login
_TdsSocket.login = _login_without_routing


def _server_error(number: int, message: str, context: str = "") -> DriverError:
    """The reason for a SQL Server error by its number."""
    message = message.strip()
    if number == _CANNOT_OPEN_DATABASE or _CANNOT_OPEN_DATABASE_TEXT.search(message):
        code = Reason.RESOURCE_NOT_FOUND
        message += " (SQL Server also says this when the login has no user in the database)"
    else:
        code = _BY_NUMBER.get(number, Reason.PROVIDER_ERROR)
    return DriverError(code, f"{context}{message}", server_code=str(number))


def _classify(exc: BaseException, context: str = "", *, connected: bool = True) -> DriverError:
    """A reason for a failure; server messages never contain the password."""
    if isinstance(exc, _Rerouted):
        return DriverError(
            Reason.EGRESS_DENIED,
            f"{context}the server redirected the login to {exc}; redirects are not followed, "
            "so set host and port to that server",
        )
    if isinstance(exc, tds_base.DatabaseError) and exc.number:
        # args[0] holds every message of the reply; .text only the last.
        return _server_error(exc.number, str(exc.args[0] if exc.args else exc.text), context)
    if isinstance(exc, OpenSSL.SSL.Error):
        return DriverError(Reason.TLS_ERROR, f"{context}TLS: {_tls_reason(exc)}")
    if isinstance(exc, TimeoutError):
        return DriverError(Reason.TIMEOUT, f"{context}the server did not answer in time")
    if isinstance(exc, OSError) and not connected:
        detail = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return DriverError(Reason.HOST_UNREACHABLE, f"{context}cannot connect: {detail}")
    if isinstance(exc, OSError | tds_base.ClosedConnectionError):
        return DriverError(Reason.PROTOCOL_ERROR, f"{context}the server closed the connection")
    if isinstance(exc, tds_base.Error) and _TLS_TEXT.search(str(exc.args[0] if exc.args else "")):
        # e.g. the server requires encryption, or its certificate names another host.
        return DriverError(Reason.TLS_ERROR, f"{context}{exc.args[0]}")
    if isinstance(exc, (tds_base.Error, *_MALFORMED)):
        return DriverError(
            Reason.PROTOCOL_ERROR, f"{context}the server did not answer as a SQL Server"
        )
    return DriverError(Reason.PROVIDER_ERROR, f"{context}{type(exc).__name__}")


@contextlib.contextmanager
def _ca_file(ca_pem: str | None) -> Iterator[str]:
    """A file of the CA to trust: spec.tls's (in a private directory), else the system's."""
    if not ca_pem:
        system = ssl.get_default_verify_paths().openssl_cafile
        if not os.path.isfile(system):
            raise DriverError(
                Reason.CONFIG_INVALID, "no system CA certificates here; give spec.tls a CA"
            )
        yield system
        return
    with pem_files("patchbay-sqlserver-", {"ca.crt": ca_pem}) as paths:
        yield paths["ca.crt"]


def _connect(sock: socket.socket, address: IPAddress, login: _Login) -> pytds.Connection:
    """Connect the socket and log in; runs in the verification's thread."""
    context = f"cannot log in to {login.host} port {login.port}: "
    # Raised outside the except blocks, so that no library exception, whose traceback
    # holds the login and its password, rides along as __context__.
    error: DriverError | None = None
    try:
        sock.connect((str(address), login.port))
    except OSError as exc:
        error = _classify(exc, context, connected=False)
    if error is not None:
        raise error
    with _ca_file(login.ca_pem) if login.encrypt else contextlib.nullcontext() as cafile:
        try:
            return pytds.connect(
                dsn=login.server_name,  # with sock given, only named in TLS and the login
                port=login.port,
                sock=sock,
                database=login.database,
                user=login.username,
                password=login.password,
                cafile=cafile,  # python-tds reads it while connecting
                validate_host=True,
                login_timeout=SOCKET_TIMEOUT_SECONDS,
                timeout=SOCKET_TIMEOUT_SECONDS,  # else reads after the login never time out
                disable_connect_retry=True,  # a retry would reuse the closed socket
                autocommit=True,  # transactions are the checks' own, in T-SQL
                appname="patchbay",
            )
        except Exception as exc:  # python-tds raises many kinds: _classify sorts them
            error = _classify(exc, context)
    raise error


def _quote(identifier: str) -> str:
    return "[" + identifier.replace("]", "]]") + "]"


def _literal(text: str) -> str:
    """``text`` as a T-SQL string literal: quotes doubled, nothing else is special in one."""
    return "N'" + text.replace("'", "''") + "'"


# Words that start statements other than queries, write (INTO makes SELECT ... INTO create a
# table), begin or end transactions, run other code or reach other servers. Most are
# reserved words, which T-SQL never takes for an unquoted name; a column named after one of
# the others must be quoted ([get]). END is missing on purpose: CASE ... END is a query's,
# and the BEGIN it would close is forbidden.
_FORBIDDEN = frozenset(
    {
        "ADD",
        "ALTER",
        "BACKUP",
        "BEGIN",
        "BREAK",
        "BULK",
        "CHECKPOINT",
        "CLOSE",
        "COMMIT",
        "CONTINUE",
        "CREATE",
        "DBCC",
        "DEALLOCATE",
        "DECLARE",
        "DELETE",
        "DENY",
        "DISABLE",
        "DROP",
        "ENABLE",
        "EXEC",
        "EXECUTE",
        "GET",
        "GOTO",
        "GRANT",
        "IF",
        "INSERT",
        "INTO",
        "KILL",
        "LINENO",
        "MERGE",
        "MOVE",
        "OPEN",
        "OPENDATASOURCE",
        "OPENQUERY",
        "OPENROWSET",
        "PRINT",
        "RAISERROR",
        "READTEXT",
        "RECEIVE",
        "RECONFIGURE",
        "RESTORE",
        "RETURN",
        "REVERT",
        "REVOKE",
        "ROLLBACK",
        "SAVE",
        "SEND",
        "SET",
        "SETUSER",
        "SHUTDOWN",
        "THROW",
        "TRAN",
        "TRANSACTION",
        "TRUNCATE",
        "UPDATE",
        "UPDATETEXT",
        "USE",
        "WAITFOR",
        "WHILE",
        "WRITETEXT",
    }
)
_WORD = re.compile(r"[A-Za-z0-9_@#$]+")
_QUOTES = {"'": "'", '"': '"', "[": "]"}


class _Unreadable(Exception):
    """The batch has an unterminated comment, string or name, or a character outside
    ASCII in its code."""


def _tokens(sql: str) -> Iterator[str]:
    """The words (upper case) and other characters of a T-SQL batch, outside comments
    (``--``, nested ``/* */``), strings and quoted names, each of which is one token ``'``.

    Only ASCII is taken outside strings, comments and quoted names: a character that SQL
    Server reads as a separator and this as part of a word could hide a word.
    """
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in " \t\r\n":
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                opens, closes = sql.find("/*", i), sql.find("*/", i)
                if closes < 0:
                    raise _Unreadable
                if 0 <= opens < closes:
                    depth, i = depth + 1, opens + 2
                else:
                    depth, i = depth - 1, closes + 2
        elif c in _QUOTES:
            close, i = _QUOTES[c], i + 1
            while True:  # a doubled closing character stands for itself
                end = sql.find(close, i)
                if end < 0:
                    raise _Unreadable
                if not sql.startswith(close * 2, end):
                    i = end + 1
                    break
                i = end + 2
            yield "'"
        elif not c.isascii() or not c.isprintable():
            raise _Unreadable
        elif match := _WORD.match(sql, i):
            yield match.group().upper()
            i = match.end()
        else:
            yield c
            i += 1


def refusal(sql: str) -> str | None:
    """Why a query check's SQL may not be sent to SQL Server, or None when it may."""
    try:
        tokens = list(_tokens(sql))
    except _Unreadable:
        return (
            "the SQL has an unterminated comment, string or quoted name, or characters "
            "outside ASCII outside strings and quoted names ([name])"
        )
    while tokens and tokens[-1] == ";":
        tokens.pop()
    if ";" in tokens:
        return ONE_STATEMENT
    first = next((t for t in tokens if t != "("), None)
    forbidden = sorted({t for t in tokens if t in _FORBIDDEN})
    if first not in ("SELECT", "WITH") or forbidden:
        found = f" (found {', '.join(forbidden)})" if forbidden else ""
        return f"{ONLY_QUERIES}, which writes nothing and leaves transactions alone{found}"
    if any(a == "NEXT" and b == "VALUE" for a, b in itertools.pairwise(tokens)):
        return f"{ONLY_QUERIES}; NEXT VALUE FOR takes a number from a sequence for good"
    if "{" in tokens:
        return f"{ONLY_QUERIES}; no ODBC escapes ({{...}})"
    return None


def _begin(cursor: pytds.Cursor, deadline: Deadline, row_count: int) -> None:
    """Open the transaction a check or discovery call runs in, with its limits: rows per
    statement (0: no limit), bytes of a large value, and time to wait for a lock."""
    cursor.execute(
        f"SET ROWCOUNT {row_count}; SET TEXTSIZE {TEXT_SIZE};"
        f" SET LOCK_TIMEOUT {deadline.remaining_ms()}; BEGIN TRANSACTION"
    )


def _transaction_kept(cursor: pytds.Cursor) -> None:
    """ConfigInvalid when the SQL run since ``_begin`` ended or nested its transaction."""
    cursor.execute("SELECT @@TRANCOUNT")
    # fetchall reads on to the end of the reply, so no attention is sent for the rest.
    if [tuple(row) for row in cursor.fetchall()] != [(1,)]:
        raise DriverError(
            Reason.CONFIG_INVALID,
            "the SQL ended or nested the transaction it runs in; "
            "it must not commit, roll back or begin transactions",
        )


def _check(cursor: pytds.Cursor, check: CheckSpec, deadline: Deadline) -> int | None:
    """Run one check in its own transaction; the per-value cap when a value was cut."""
    subject = check_subject(check)
    if check.type == "query":
        why = refusal(subject)
        if why is not None:
            raise DriverError(Reason.CONFIG_INVALID, why)
        # Before _begin: SET ROWCOUNT 1 would cut the description to one column.
        _refuse_uncut(_described(cursor, subject))
    _begin(cursor, deadline, 1)
    cut_to: int | None = None
    if check.type == "table":
        schema, _, table = subject.rpartition(".")
        qualified = f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)
        # TOP (0) still checks that the table exists and may be read, but reads nothing.
        cursor.execute(f"SELECT TOP (0) 1 FROM {qualified}")
    else:
        cursor.execute(subject)
        if cursor.description is None:
            raise DriverError(Reason.CONFIG_INVALID, NO_RESULT_SET)
        cap = value_cap(len(cursor.description))
        row = cursor.fetchone()
        if row is not None and any(capped_value(value, cap)[1] for value in row):
            cut_to = cap
    while cursor.nextset():  # read the rest, at most a row per statement
        pass
    _transaction_kept(cursor)
    return cut_to


def _rolled_back(
    conn: pytds.Connection,
    sock: socket.socket,
    deadline: Deadline,
    work: Callable[[pytds.Cursor], T],
) -> T:
    """``work`` (a check or discovery call, which opens its transaction with ``_begin``),
    then a rollback of whatever it left open; runs in a thread.

    A server error leaves the connection usable; any other failure (the connection is
    gone or garbled, or the time is up) is SessionLost.
    """
    error: DriverError | None = None
    try:
        # When the time is up python-tds stops waiting and sends the server an attention.
        sock.settimeout(deadline.remaining())
        with conn.cursor() as cursor:
            try:
                result = work(cursor)
            except DriverError as exc:
                error = exc
            except tds_base.DatabaseError as exc:
                error = _classify(exc)
            cursor.execute("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION; SET ROWCOUNT 0")
    except Exception as exc:  # the connection failed under the work: _classify sorts it
        error = SessionLost.of(_classify(exc))
    if error is not None:  # raised here, so that no library exception rides along
        raise error
    return result


def server_version(product_version: int) -> str:
    """E.g. "SQL Server 16.0.4095" from the major, minor and build the login answer gives."""
    major, minor = product_version >> 24, (product_version >> 16) & 0xFF
    return f"SQL Server {major}.{minor}.{product_version & 0xFFFF}"


async def _in_thread(sock: socket.socket, work: Callable[[], T]) -> T:
    """Run blocking python-tds work in a thread; a cancellation shuts the socket down."""
    try:
        return await asyncio.to_thread(work)
    except asyncio.CancelledError:
        # Wakes the thread from whatever read it waits in, so that it ends now.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        raise


class _Session:
    """A logged-in connection, its socket, and the time the caller gives it."""

    def __init__(self, conn: pytds.Connection, sock: socket.socket, deadline: Deadline) -> None:
        self.conn = conn
        self.sock = sock
        self.deadline = deadline

    async def run(self, work: Callable[[pytds.Cursor], T]) -> T:
        """``work`` in a thread, in a transaction rolled back (``_rolled_back``)."""
        return await _in_thread(
            self.sock, lambda: _rolled_back(self.conn, self.sock, self.deadline, work)
        )


@contextlib.asynccontextmanager
async def _logged_in(request: VerifyRequest, egress: Egress) -> AsyncIterator[tuple[_Session, int]]:
    """A session and the login's latency in milliseconds; closed on exit."""
    deadline = Deadline(request.timeout_seconds)
    login = _login(request)
    if login.encrypt and login.ca_pem:
        # The same PEM check, and message, as every other driver's, before connecting.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        await run_cpu(load_tls_material, context, TlsMaterial(ca_pem=login.ca_pem))
    address = await resolve_address(egress, login.host, login.port)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(SOCKET_TIMEOUT_SECONDS)
        started = time.monotonic()
        conn = await _in_thread(sock, lambda: _connect(sock, address, login))
        latency_ms = round((time.monotonic() - started) * 1000)
        yield _Session(conn, sock, deadline), latency_ms
        # Only closes the socket. Not in a finally: after a cancellation the thread may
        # still be ending, and leaving the with block closes the socket anyway.
        conn.close()


# ----- discovery ---------------------------------------------------------------------

# Values SET TEXTSIZE does not cut, by system_type_id: a sample reads them as text.
_UNCUT_TYPES = {240: "CLR type", 241: "xml"}
_SYSTEM_SCHEMAS = "(N'sys', N'INFORMATION_SCHEMA')"
# sys.all_objects lists what the login may see; HAS_PERMS_BY_NAME keeps what it may read.
# System objects: those in the sys and INFORMATION_SCHEMA schemas, and those Microsoft
# ships into others (is_ms_shipped).
_TABLES = (
    "SELECT s.name, o.name,"
    f" CASE WHEN o.is_ms_shipped = 1 OR s.name IN {_SYSTEM_SCHEMAS}"
    " THEN N'system ' ELSE N'' END + CASE o.type WHEN 'V' THEN N'view' ELSE N'table' END"
    " FROM sys.all_objects AS o JOIN sys.schemas AS s ON s.schema_id = o.schema_id"
    " WHERE o.type IN ('U', 'V', 'S')"
    " AND HAS_PERMS_BY_NAME(QUOTENAME(s.name) + N'.' + QUOTENAME(o.name), N'OBJECT', N'SELECT') = 1"
)
_NOT_SYSTEM = f" AND o.is_ms_shipped = 0 AND s.name NOT IN {_SYSTEM_SCHEMAS}"
# Types spelled as SQL Server spells them (as sys.dm_exec_describe_first_result_set does):
# lengths in characters, "max", precision and scale; alias types by their own name.
_COLUMN_TYPE = (
    "CASE WHEN t.is_user_defined = 1 THEN t.name"
    " WHEN t.name IN (N'varchar', N'char', N'varbinary', N'binary') THEN t.name + N'('"
    " + CASE c.max_length WHEN -1 THEN N'max' ELSE CAST(c.max_length AS nvarchar(4)) END + N')'"
    " WHEN t.name IN (N'nvarchar', N'nchar') THEN t.name + N'('"
    " + CASE c.max_length WHEN -1 THEN N'max' ELSE CAST(c.max_length / 2 AS nvarchar(4)) END"
    " + N')'"
    " WHEN t.name IN (N'decimal', N'numeric') THEN t.name"
    " + N'(' + CAST(c.precision AS nvarchar(2)) + N',' + CAST(c.scale AS nvarchar(2)) + N')'"
    " WHEN t.name IN (N'datetime2', N'time', N'datetimeoffset') THEN t.name"
    " + N'(' + CAST(c.scale AS nvarchar(1)) + N')'"
    " ELSE t.name END"
)
_IN_PRIMARY_KEY = (
    "CASE WHEN EXISTS (SELECT 1 FROM sys.indexes AS i JOIN sys.index_columns AS ic"
    " ON ic.object_id = i.object_id AND ic.index_id = i.index_id"
    " WHERE i.object_id = c.object_id AND i.is_primary_key = 1 AND ic.column_id = c.column_id)"
    " THEN 1 ELSE 0 END"
)


def tables_sql(include_system: bool) -> str:
    """What ``tables`` asks the server."""
    return _TABLES + ("" if include_system else _NOT_SYSTEM) + " ORDER BY 1, 2"


def columns_sql(schema: str, table: str) -> str:
    """What ``columns`` asks the server: nothing for a table the login may not see."""
    qualified = _literal(f"{_quote(schema)}.{_quote(table)}")
    return (
        f"SELECT c.name, {_COLUMN_TYPE}, c.is_nullable, {_IN_PRIMARY_KEY}"
        " FROM sys.all_columns AS c JOIN sys.types AS t ON t.user_type_id = c.user_type_id"
        " JOIN sys.all_objects AS o ON o.object_id = c.object_id AND o.type IN ('U', 'V', 'S')"
        f" WHERE c.object_id = OBJECT_ID({qualified}) ORDER BY c.column_id"
    )


def describe_sql(statement: str) -> str:
    """What asks the server to describe ``statement``'s columns without running it."""
    return (
        "SELECT name, system_type_name, user_type_name, system_type_id, error_number,"
        f" error_message FROM sys.dm_exec_describe_first_result_set({_literal(statement)},"
        " NULL, 0) ORDER BY column_ordinal"
    )


@dataclass(frozen=True)
class _Described:
    name: str
    type: str  # as SQL Server spells it, e.g. "nvarchar(40)"
    uncut: str | None  # the kind of type SET TEXTSIZE does not cut, e.g. "xml"


def _described(cursor: pytds.Cursor, statement: str) -> list[_Described]:
    """The columns of ``statement``'s result, which the server describes without running
    it; the server's error when it cannot, ConfigInvalid when there is no result."""
    cursor.execute(describe_sql(statement))
    found = cursor.fetchall()
    for *_, error_number, error_message in found:
        if error_number is not None:  # the function reports errors in a row of its own
            raise _server_error(int(error_number), str(error_message))
    if not found:
        raise DriverError(Reason.CONFIG_INVALID, NO_RESULT_SET)
    return [
        _Described(name or "", str(system_type or user_type), _UNCUT_TYPES.get(type_id))
        for name, system_type, user_type, type_id, *_ in found
    ]


def _refuse_uncut(columns: list[_Described]) -> list[_Described]:
    """``columns``, unless one holds values the server does not cut (ConfigInvalid)."""
    uncut = [f"{c.name or '(no name)'} ({c.uncut})" for c in columns if c.uncut]
    if uncut:
        raise DriverError(
            Reason.CONFIG_INVALID,
            "SQL Server does not cut xml and CLR-type values to the read cap: "
            f"CAST {', '.join(uncut)} AS nvarchar(max)",
        )
    return columns


def _text_size(cap: int) -> int:
    """SET TEXTSIZE for values cut to ``cap`` bytes: one character more than the cap takes
    in UTF-16, so that a value the server cut is longer than the cap, and the cut shows."""
    return 2 * (cap + 1)


def _read(cursor: pytds.Cursor, statement: str, types: Sequence[str], max_rows: int) -> RowSet:
    """At most max_rows rows of ``statement`` (of columns of ``types``) within the read caps
    (``sql.CappedRows``), in the open transaction."""
    # One row more than max_rows tells whether there are more.
    text_size = _text_size(value_cap(len(types)))
    cursor.execute(f"SET ROWCOUNT {max_rows + 1}; SET TEXTSIZE {text_size}")
    cursor.execute(statement)
    names = [str(column[0]) for column in cursor.description or ()]
    if len(names) != len(types):
        raise DriverError(
            Reason.PROTOCOL_ERROR,
            f"the server described {len(types)} columns but returned {len(names)}",
        )
    rows = sql.CappedRows(names, types, max_rows)
    while (row := cursor.fetchone()) is not None:
        if not rows.offer(row):
            cursor.cancel()  # an attention: the server stops sending the rest
            break
    while cursor.nextset():
        pass
    _transaction_kept(cursor)
    return rows.result()[0]


def _catalog(cursor: pytds.Cursor, statement: str) -> list[tuple[JsonValue, ...]]:
    """Every row of one of the driver's own catalog statements."""
    cursor.execute(statement)
    return [tuple(json_value(value) for value in row) for row in cursor.fetchall()]


class SqlServerSqlBrowser:
    """SqlBrowser over one session; each call is its own transaction, rolled back."""

    def __init__(self, session: _Session) -> None:
        self._session = session

    async def _run(self, work: Callable[[pytds.Cursor], T]) -> T:
        def begun(cursor: pytds.Cursor) -> T:
            _begin(cursor, self._session.deadline, 0)
            return work(cursor)

        return await self._session.run(begun)

    async def tables(self, include_system: bool) -> list[TableInfo]:
        found = await self._run(lambda cursor: _catalog(cursor, tables_sql(include_system)))
        return sql.table_infos(found, {})  # the statement names the kinds

    async def columns(self, schema: str, table: str) -> list[ColumnInfo]:
        found = await self._run(lambda cursor: _catalog(cursor, columns_sql(schema, table)))
        if not found:  # a table has at least one column
            raise DriverError(Reason.RESOURCE_NOT_FOUND, f"table {schema}.{table} does not exist")
        return sql.column_infos(found)

    async def sample(self, schema: str, table: str, rows: int) -> RowSet:
        qualified = f"{_quote(schema)}.{_quote(table)}"

        def read(cursor: pytds.Cursor) -> RowSet:
            columns = _described(cursor, f"SELECT * FROM {qualified}")
            select = ", ".join(
                f"CAST({_quote(c.name)} AS nvarchar(max)) AS {_quote(c.name)}"
                if c.uncut
                else _quote(c.name)
                for c in columns
            )
            statement = f"SELECT {select} FROM {qualified}"
            return _read(cursor, statement, [c.type for c in columns], rows)

        return await self._run(read)

    async def query(self, statement: str, max_rows: int) -> RowSet:
        why = refusal(statement)
        if why is not None:  # nothing is sent
            raise DriverError(Reason.CONFIG_INVALID, why)

        def read(cursor: pytds.Cursor) -> RowSet:
            columns = _refuse_uncut(_described(cursor, statement))
            return _read(cursor, statement, [c.type for c in columns], max_rows)

        return await self._run(read)


class SqlServerDriver:
    name = "sqlserver"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        async with _logged_in(request, egress) as (session, latency_ms):
            version = server_version(session.conn.product_version)

            async def check(spec: CheckSpec) -> str:
                return ok_message(
                    await session.run(lambda cursor: _check(cursor, spec, session.deadline))
                )

            results = await run_checks(
                self.name, request, {"query": check, "table": check}, session.deadline
            )
        return results.outcome(server_version=version, latency_ms=latency_ms)

    @contextlib.asynccontextmanager
    async def browse_sql(self, request: VerifyRequest, egress: Egress) -> AsyncIterator[SqlBrowser]:
        async with _logged_in(request, egress) as (session, _):
            yield SqlServerSqlBrowser(session)


# Checked by mypy, as factory= below checks the Driver interface: the class can
# browse as its capabilities say.
_sql: SqlBrowsing = SqlServerDriver()
DRIVER = DriverInfo(
    name=SqlServerDriver.name,
    binding_type="sqlserver",
    default_port=DEFAULT_PORT,
    capabilities=frozenset({"verify", "sql"}),
    factory=SqlServerDriver,
)
