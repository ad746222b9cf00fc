"""The sqlserver driver against loopback listeners that are not SQL Server.

No SQL Server can be installed here (it is in neither Debian nor PyPI), so these tests
cover what needs none: unreachable and silent servers, peers that do not speak TDS, a
fake server's answer to the driver's first (PRELOGIN) message, the egress policy and
secrets; and, against a fake that keeps SQL Server's side of TDS (tds_fake), what the
driver sends for checks and discovery: which SQL reaches the server, the limits it sets,
the attention it sends when time is up or it has read enough, and what it makes of the
answers. The fake does not evaluate SQL, so the catalog queries themselves are not proven
here (docs/discovery.md says what is not). docs/connectors.md says what a test against a
real server needs.
Everything connects to 127.0.0.1 (or 127.0.0.2 for the egress test) only.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import pytest
from aiohttp import web

import http_server
from driver_calls import (
    OPEN_POLICY,
    SqlDriverCalls,
    assert_error_keeps_no_secret,
    assert_stopped_at_the_result_cap,
    outcome_texts,
    query,
    run,
)
from fake_tcp import FakeTcpServer
from localserver import free_port
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy, parse_networks
from patchbay.core.verification import run_verification
from patchbay.drivers.base import (
    MAX_VALUE_BYTES,
    ColumnInfo,
    DriverError,
    RowSet,
    SqlBrowser,
    TableInfo,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
)
from patchbay.drivers.sqlserver import TEXT_SIZE, SqlServerDriver, columns_sql, tables_sql
from tds_fake import Column, FakeSqlServer, ResultSet

T = TypeVar("T")
DRIVER = SqlServerDriver()
CALLS = SqlDriverCalls(DRIVER)
verify = CALLS.verify
verify_error = CALLS.error
PASSWORD = "canary-" + uuid.uuid4().hex

# PRELOGIN ENCRYPTION values (MS-TDS 2.2.6.5).
ENCRYPT_NOT_SUP, ENCRYPT_REQ = 2, 3


def make_request(
    *, password: str = PASSWORD, tls: TlsMaterial | None = None, **config: str | int
) -> VerifyRequest:
    values: dict[str, str | int] = {
        "host": "127.0.0.1",
        "database": "orders",
        "username": "app",
        "encrypt": "no",
    }
    values.update(config)
    return VerifyRequest(config=values, secrets={"password": password}, tls=tls)


class Silent(FakeTcpServer):
    """Accepts and never answers; the conversation ends when the client hangs up."""

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()


class ClosesAtOnce(FakeTcpServer):
    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)


class PreloginAnswer(FakeTcpServer):
    """Answers the client's PRELOGIN with a version and the given ENCRYPTION value."""

    def __init__(self, encryption: int) -> None:
        super().__init__()
        self.encryption = encryption

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(8)
        await reader.readexactly(struct.unpack(">H", header[2:4])[0] - 8)
        options = 2 * 5 + 1  # two option entries and the terminator
        payload = (
            struct.pack(">BHH", 0x00, options, 6)  # VERSION
            + struct.pack(">BHH", 0x01, options + 6, 1)  # ENCRYPTION
            + b"\xff"
            + struct.pack(">LH", 0x10000FA0, 0)
            + bytes([self.encryption])
        )
        # A REPLY packet, end of message.
        writer.write(struct.pack(">BBHHBB", 0x04, 0x01, 8 + len(payload), 0, 1, 0) + payload)
        await writer.drain()
        await reader.read()


async def _failure_from(server: FakeTcpServer, **config: str | int) -> DriverError:
    async with server.serve():
        return await CALLS.failure(make_request(port=server.port, **config))


def test_closed_port_is_host_unreachable_and_retryable() -> None:
    error = verify_error(make_request(port=free_port()))
    assert error.code == Reason.HOST_UNREACHABLE
    assert error.retryable
    assert_error_keeps_no_secret(error, PASSWORD)


def test_silent_server_times_out_within_the_timeout_and_its_thread_ends() -> None:
    async def scenario() -> tuple[VerifyOutcome, int]:
        threads = threading.active_count()
        server = Silent()
        async with server.serve():
            outcome, _ = await run_verification(
                DRIVER, make_request(port=server.port), egress=OPEN_POLICY, timeout_seconds=1
            )
            assert server.connected.is_set()
            # The cancelled verification hangs up rather than leave its thread reading.
            await asyncio.wait_for(server.closed.wait(), 10)
        await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), 10)
        return outcome, threading.active_count() - threads

    outcome, threads_left = run(scenario())
    assert (outcome.code, outcome.message) == (Reason.TIMEOUT, "no answer within 1s")
    assert threads_left == 0
    assert all(PASSWORD not in text for text in outcome_texts(outcome))


def test_http_server_is_protocol_error() -> None:
    async def scenario() -> DriverError:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        async with http_server.serve({"/": hello}) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            return await CALLS.failure(make_request(port=port))

    error = run(scenario())
    assert error.code == Reason.PROTOCOL_ERROR
    assert_error_keeps_no_secret(error, PASSWORD)


def test_server_that_hangs_up_at_once_is_protocol_error() -> None:
    error = run(_failure_from(ClosesAtOnce()))
    assert error.code == Reason.PROTOCOL_ERROR


def test_encrypt_yes_against_a_server_without_encryption_is_tls_error() -> None:
    error = run(_failure_from(PreloginAnswer(ENCRYPT_NOT_SUP), encrypt="yes"))
    assert error.code == Reason.TLS_ERROR
    assert "not supported by server" in error.message
    assert_error_keeps_no_secret(error, PASSWORD)


def test_encrypt_no_against_a_server_that_requires_encryption_is_tls_error() -> None:
    error = run(_failure_from(PreloginAnswer(ENCRYPT_REQ), encrypt="no"))
    assert error.code == Reason.TLS_ERROR
    assert "required by server" in error.message


def test_egress_denied_host_is_never_contacted() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> tuple[DriverError, int]:
        server = ClosesAtOnce(host="127.0.0.2")
        async with server.serve():
            error = await CALLS.failure(make_request(host="127.0.0.2", port=server.port), policy)
            return error, server.connections

    error, connections = run(scenario())
    assert error.code == Reason.EGRESS_DENIED
    assert connections == 0


def test_canary_password_appears_in_no_outcome() -> None:
    async def outcomes() -> list[VerifyOutcome]:
        found = []
        for server, config in (
            (ClosesAtOnce(), {}),
            (PreloginAnswer(ENCRYPT_NOT_SUP), {"encrypt": "yes"}),
            (PreloginAnswer(ENCRYPT_REQ), {}),
        ):
            async with server.serve():
                request = make_request(port=server.port, **config)
                outcome, _ = await run_verification(
                    DRIVER, request, egress=OPEN_POLICY, timeout_seconds=10
                )
                found.append(outcome)
        return found

    for outcome in run(outcomes()):
        assert outcome.result == "Failed"
        assert all(PASSWORD not in text for text in outcome_texts(outcome))


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(make_request(encrypt="sometimes"), id="encrypt"),
        pytest.param(make_request(host="db\\reports"), id="named-instance"),
        pytest.param(make_request(port=70000), id="port"),
        pytest.param(make_request(database=""), id="no-database"),
        pytest.param(make_request(username="u" * 129), id="long-username"),
        pytest.param(
            make_request(tls=TlsMaterial(client_cert_pem="cert", client_key_pem="key")),
            id="client-certificate",
        ),
        pytest.param(
            make_request(encrypt="yes", tls=TlsMaterial(ca_pem="not a certificate")),
            id="bad-ca",
        ),
    ],
)
def test_invalid_inputs_are_config_invalid_before_any_connection(request_: VerifyRequest) -> None:
    server = ClosesAtOnce()

    async def scenario() -> tuple[DriverError, int]:
        async with server.serve():
            request = VerifyRequest(
                config={**request_.config, "port": request_.config.get("port", server.port)},
                secrets=request_.secrets,
                tls=request_.tls,
            )
            return await CALLS.failure(request), server.connections

    error, connections = run(scenario())
    assert error.code == Reason.CONFIG_INVALID
    assert connections == 0


def test_missing_password_is_secret_key_missing() -> None:
    assert verify_error(make_request(password="")).code == Reason.SECRET_KEY_MISSING


def test_loopback_socket_family_follows_the_address() -> None:
    # The driver opens its own socket; an IPv6 literal must get an IPv6 one.
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    error = verify_error(make_request(host="::1", port=free_port()))
    assert error.code == Reason.HOST_UNREACHABLE


# --- checks, against a fake that keeps SQL Server's side of TDS ---------------------------

ONE_ROW = ResultSet((Column("one", "int"),), ((1,),))
# A query that takes longer than any test waits: the fake never answers it.
EVERYTHING = "select count(*) from everything"
COUNT = ResultSet((Column("n", "int"),), ((1,),))


async def _checked(
    server: FakeSqlServer, *sql: str, caller_limit: float = 10, server_limit: float | None = None
) -> VerifyOutcome:
    async with server.serve():
        request = replace(
            make_request(port=server.port),
            checks=tuple(query(s) for s in sql),
            timeout_seconds=server_limit,
        )
        outcome, _ = await run_verification(
            DRIVER, request, egress=OPEN_POLICY, timeout_seconds=caller_limit
        )
        return outcome


def test_query_check_runs_in_a_transaction_rolled_back_with_limits_set() -> None:
    server = FakeSqlServer(results={"select 1 as one": ONE_ROW})
    outcome = run(_checked(server, "select 1 as one"))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    describe, setup, check, tran_count, cleanup = server.batches[-5:]
    assert "sys.dm_exec_describe_first_result_set(N'select 1 as one'" in describe
    assert re.fullmatch(
        rf"SET ROWCOUNT 1; SET TEXTSIZE {TEXT_SIZE}; SET LOCK_TIMEOUT \d+; BEGIN TRANSACTION",
        setup,
    )
    assert (check, tran_count) == ("select 1 as one", "SELECT @@TRANCOUNT")
    assert cleanup.startswith("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")


def test_query_check_that_could_write_never_reaches_the_server() -> None:
    writes = (
        "COMMIT; DELETE FROM orders; BEGIN TRAN",
        "COMMIT DELETE FROM orders BEGIN TRAN",  # T-SQL needs no semicolons
        "select 1 /* a /* nested */ comment */ delete from orders",
        "with gone as (select * from orders) delete from gone",
        "select * into orders_copy from orders",
        "select 1; exec('delete from orders')",
        "select * from openquery(other, 'delete from orders')",
        "select next value for order_numbers",
        "select 1 waitfor delay '00:01'",
        "select 1\u3000delete from orders",  # a separator to SQL Server, not to Python
        "select 'unterminated",
        "delete from orders",
    )
    server = FakeSqlServer(results={"select 1 as one": ONE_ROW})
    outcome = run(_checked(server, *writes, "select 1 as one"))
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Failed", Reason.CONFIG_INVALID)
    ] * len(writes) + [("Succeeded", Reason.VERIFIED)]
    kinds = [
        next(
            kind
            for kind in ("only one statement", "only a query", "unterminated")
            if kind in check.message
        )
        for check in outcome.checks[: len(writes)]
    ]
    one, only, bad = "only one statement", "only a query", "unterminated"
    expected = [one, only, only, only, only, one, only, only, only, bad, bad, only]
    assert kinds == expected
    # What reached the server: the driver's own batches and the one query, no write.
    sent = "\n".join(server.batches).upper()
    assert "DELETE" not in sent and "INTO" not in sent and "COMMIT" not in sent
    assert "select 1 as one" in server.batches


def test_query_check_keeps_strings_comments_and_quoted_names_apart_from_its_words() -> None:
    sql = (
        'select \'delete; commit\' as [drop; table], "it""s" -- ; delete\n'
        "from orders /* insert */ with (nolock);"
    )
    server = FakeSqlServer(results={sql: ONE_ROW})
    outcome = run(_checked(server, sql))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert sql in server.batches


def test_query_check_reading_a_long_value_has_it_cut_on_the_server_and_says_so() -> None:
    long_text = ResultSet((Column("body", "nvarchar(max)"),), (("x" * 1_000_000,),))
    server = FakeSqlServer(results={"select body from documents": long_text})
    outcome = run(_checked(server, "select body from documents"))
    assert (outcome.checks[0].result, outcome.checks[0].code) == ("Succeeded", Reason.VERIFIED)
    assert f"cut to {MAX_VALUE_BYTES} bytes" in outcome.checks[0].message
    # The server sent no more than TEXTSIZE allowed (and the fake keeps to it as SQL Server).
    assert server.largest_reply < TEXT_SIZE + 1024


def test_query_check_outliving_the_time_left_is_cancelled_on_the_server_as_timeout() -> None:
    server = FakeSqlServer(results={EVERYTHING: COUNT}, stalled={EVERYTHING})
    outcome = run(_checked(server, "select count(*) from everything", server_limit=1.0))
    assert outcome.code == Reason.TIMEOUT
    assert server.attentions >= 1


def test_query_check_out_of_time_is_unknown_and_later_checks_do_not_run() -> None:
    server = FakeSqlServer(
        stalled={EVERYTHING}, results={"select 1 as one": ONE_ROW, EVERYTHING: COUNT}
    )
    outcome = run(
        _checked(server, "select count(*) from everything", "select 1 as one", server_limit=1.0)
    )
    assert (outcome.result, outcome.code) == ("Unknown", Reason.TIMEOUT)
    assert [(c.result, c.code) for c in outcome.checks] == [("Unknown", Reason.TIMEOUT)] * 2
    assert outcome.checks[1].message.startswith("not run: ")
    assert "select 1 as one" not in server.batches


def test_query_check_cut_off_by_the_callers_timeout_hangs_up_on_the_server() -> None:
    server = FakeSqlServer(results={EVERYTHING: COUNT}, stalled={EVERYTHING})

    async def scenario() -> VerifyOutcome:
        outcome = await _checked(server, "select count(*) from everything", caller_limit=1.0)
        await asyncio.wait_for(server.closed.wait(), 10)
        return outcome

    outcome = run(scenario())
    assert outcome.code == Reason.TIMEOUT
    assert server.closed.is_set()


# --- discovery, against the same fake --------------------------------------------------------

TEXT = "nvarchar(max)"


def browse(
    server: FakeSqlServer, use: Callable[[SqlBrowser], Awaitable[T]], server_limit: float = 10
) -> T:
    """What ``use`` finds in one browsing session on ``server``."""

    async def scenario() -> T:
        async with server.serve():
            request = replace(make_request(port=server.port), timeout_seconds=server_limit)
            async with DRIVER.browse_sql(request, OPEN_POLICY) as browser:
                return await use(browser)

    return run(scenario())


def browse_error(
    server: FakeSqlServer, use: Callable[[SqlBrowser], Awaitable[object]], server_limit: float = 10
) -> DriverError:
    with pytest.raises(DriverError) as info:
        browse(server, use, server_limit)
    assert_error_keeps_no_secret(info.value, PASSWORD)
    return info.value


def test_tables_lists_what_the_server_lists_and_system_tables_only_on_request() -> None:
    listing = (Column("schema", TEXT), Column("name", TEXT), Column("kind", TEXT))
    user_tables = (("dbo", "open_orders", "view"), ("dbo", "orders", "table"))
    server = FakeSqlServer(
        results={
            tables_sql(False): ResultSet(listing, user_tables),
            tables_sql(True): ResultSet(listing, (*user_tables, ("sys", "objects", "system view"))),
        }
    )

    async def listed(browser: SqlBrowser) -> tuple[list[TableInfo], list[TableInfo]]:
        return await browser.tables(False), await browser.tables(True)

    user, everything = browse(server, listed)
    assert user == [TableInfo("dbo", "open_orders", "view"), TableInfo("dbo", "orders", "table")]
    assert TableInfo("sys", "objects", "system view") in everything
    # The statement leaves system objects out unless asked; a listing is never cut short.
    assert "is_ms_shipped = 0" in tables_sql(False)
    assert "is_ms_shipped = 0" not in tables_sql(True)
    setup, listed, cleanup = server.batches[-3:]
    assert setup.startswith("SET ROWCOUNT 0;") and setup.endswith("BEGIN TRANSACTION")
    assert listed == tables_sql(True)
    assert cleanup.startswith("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")


# What columns_sql answers: name, type, whether nullable, whether in the primary key.
DEFINITION = (Column("name", TEXT), Column("type", TEXT), Column("n", "bit"), Column("k", "int"))


def test_columns_show_type_nullability_and_primary_key() -> None:
    server = FakeSqlServer(
        results={
            columns_sql("dbo", "orders"): ResultSet(
                DEFINITION,
                (("OrderID", "int", False, 1), ("Customer Name", "nvarchar(40)", True, 0)),
            )
        }
    )
    assert browse(server, lambda b: b.columns("dbo", "orders")) == [
        ColumnInfo("OrderID", "int", nullable=False, primary_key=True),
        ColumnInfo("Customer Name", "nvarchar(40)", nullable=True, primary_key=False),
    ]


def test_columns_of_a_table_the_login_cannot_see_is_resource_not_found() -> None:
    server = FakeSqlServer(results={columns_sql("dbo", "secrets"): ResultSet(DEFINITION, ())})
    error = browse_error(server, lambda b: b.columns("dbo", "secrets"))
    assert (error.code, error.message) == (
        Reason.RESOURCE_NOT_FOUND,
        "table dbo.secrets does not exist",
    )


def test_table_names_stay_within_their_quotes() -> None:
    name = "x']; DROP TABLE orders; --"
    server = FakeSqlServer(results={columns_sql("dbo", name): ResultSet(DEFINITION, ())})
    error = browse_error(server, lambda b: b.columns("dbo", name))
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert "OBJECT_ID(N'[dbo].[x'']]; DROP TABLE orders; --]')" in server.batches[-2]


ORDERS = ResultSet(
    (Column("id", "int"), Column("customer", TEXT)),
    tuple((i, f"customer {i}") for i in range(1, 6)),
)


def test_sample_reads_one_row_past_the_limit_to_tell_whether_there_are_more() -> None:
    server = FakeSqlServer(
        results={
            "SELECT * FROM [dbo].[orders]": ORDERS,
            "SELECT [id], [customer] FROM [dbo].[orders]": ORDERS,
        }
    )

    async def sampled(browser: SqlBrowser) -> tuple[RowSet, RowSet]:
        return await browser.sample("dbo", "orders", 2), await browser.sample("dbo", "orders", 5)

    two, everything = browse(server, sampled)
    assert two == RowSet(
        ("id", "customer"), ("int", TEXT), ((1, "customer 1"), (2, "customer 2")), True
    )
    assert any(batch.startswith("SET ROWCOUNT 3; SET TEXTSIZE ") for batch in server.batches)
    assert (len(everything.rows), everything.truncated) == (5, False)


def test_sample_reads_xml_values_as_text_the_server_cuts() -> None:
    described = ResultSet((Column("id", "int"), Column("doc", "xml")), ())
    read = ResultSet((Column("id", "int"), Column("doc", TEXT)), ((1, "<a>" + "x" * 1_000_000),))
    server = FakeSqlServer(
        results={
            "SELECT * FROM [dbo].[documents]": described,
            "SELECT [id], CAST([doc] AS nvarchar(max)) AS [doc] FROM [dbo].[documents]": read,
        }
    )
    rows = browse(server, lambda b: b.sample("dbo", "documents", 10))
    assert rows.types == ("int", "xml")
    assert rows.truncated
    assert rows.rows[0] == (1, "<a>" + "x" * (MAX_VALUE_BYTES - 3))
    # The server sent no more than TEXTSIZE allowed (and the fake keeps to it as SQL Server).
    assert server.largest_reply < 2 * MAX_VALUE_BYTES + 1024


def test_query_describes_runs_and_checks_its_transaction_and_caps_rows() -> None:
    sql = "select id, customer from orders order by id"
    server = FakeSqlServer(results={sql: ORDERS})
    rows = browse(server, lambda b: b.query(sql, 3))
    assert rows.columns == ("id", "customer")
    assert rows.types == ("int", TEXT)
    assert (len(rows.rows), rows.truncated) == (3, True)
    setup, describe, limits, ran, tran_count, cleanup = server.batches[-6:]
    assert re.fullmatch(
        rf"SET ROWCOUNT 0; SET TEXTSIZE {TEXT_SIZE}; SET LOCK_TIMEOUT \d+; BEGIN TRANSACTION",
        setup,
    )
    assert "sys.dm_exec_describe_first_result_set(N'select id, customer" in describe
    assert re.fullmatch(r"SET ROWCOUNT 4; SET TEXTSIZE \d+", limits)
    assert (ran, tran_count) == (sql, "SELECT @@TRANCOUNT")
    assert cleanup.startswith("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")


def test_query_that_could_write_is_refused_before_anything_is_sent() -> None:
    server = FakeSqlServer()

    async def refused(browser: SqlBrowser) -> tuple[DriverError, int]:
        sent = len(server.batches)
        with pytest.raises(DriverError) as info:
            await browser.query("select 1; delete from orders", 10)
        return info.value, len(server.batches) - sent

    error, batches = browse(server, refused)
    assert error.code == Reason.CONFIG_INVALID
    assert "only one statement" in error.message
    assert batches == 0


@pytest.mark.parametrize(
    ("number", "message", "reason"),
    [
        (208, "Invalid object name 'nope'.", Reason.RESOURCE_NOT_FOUND),
        (
            229,
            "The SELECT permission was denied on the object 'secrets'.",
            Reason.PERMISSION_DENIED,
        ),
        (102, "Incorrect syntax near 'form'.", Reason.PROVIDER_ERROR),
    ],
)
def test_query_the_server_cannot_describe_fails_with_its_error_and_never_runs(
    number: int, message: str, reason: Reason
) -> None:
    sql = "select * form secrets"
    server = FakeSqlServer(errors={sql: (number, message)})
    error = browse_error(server, lambda b: b.query(sql, 10))
    assert (error.code, error.message, error.server_code) == (reason, message, str(number))
    assert sql not in server.batches


def test_sample_of_a_missing_table_is_resource_not_found() -> None:
    server = FakeSqlServer(
        errors={"SELECT * FROM [dbo].[nope]": (208, "Invalid object name 'dbo.nope'.")}
    )
    error = browse_error(server, lambda b: b.sample("dbo", "nope", 10))
    assert error.code == Reason.RESOURCE_NOT_FOUND


def test_query_of_xml_values_is_refused_with_the_cast_to_use_instead() -> None:
    sql = "select id, doc from documents"
    server = FakeSqlServer(
        results={sql: ResultSet((Column("id", "int"), Column("doc", "xml")), ())}
    )
    error = browse_error(server, lambda b: b.query(sql, 10))
    assert error.code == Reason.CONFIG_INVALID
    assert error.message.endswith("CAST doc (xml) AS nvarchar(max)")
    assert sql not in server.batches


def test_query_check_of_xml_values_is_refused_before_it_runs() -> None:
    sql = "select doc from documents"
    server = FakeSqlServer(results={sql: ResultSet((Column("doc", "xml"),), ())})
    check = run(_checked(server, sql)).checks[0]
    assert (check.result, check.code) == ("Failed", Reason.CONFIG_INVALID)
    assert "CAST doc (xml) AS nvarchar(max)" in check.message
    assert sql not in server.batches


def test_query_stops_reading_at_the_result_cap_and_stops_the_server() -> None:
    sql = "select body from documents"
    wide = ResultSet((Column("body", TEXT),), tuple(("y" * 60_000,) for _ in range(40)))
    server = FakeSqlServer(results={sql: wide})
    rows = browse(server, lambda b: b.query(sql, 40))
    assert_stopped_at_the_result_cap(rows, 40)
    assert server.attentions == 1


def test_query_outliving_the_time_left_is_stopped_on_the_server_as_timeout() -> None:
    sql = "select count(*) as n from everything"
    server = FakeSqlServer(results={sql: ResultSet((Column("n", "int"),), ((1,),))}, stalled={sql})
    error = browse_error(server, lambda b: b.query(sql, 10), server_limit=1.0)
    assert error.code == Reason.TIMEOUT
    assert server.attentions >= 1


def test_browsing_a_closed_port_is_host_unreachable_without_the_password() -> None:
    async def scenario() -> DriverError:
        request = make_request(port=free_port())
        with pytest.raises(DriverError) as info:
            async with DRIVER.browse_sql(request, OPEN_POLICY):
                pass
        return info.value

    error = run(scenario())
    assert error.code == Reason.HOST_UNREACHABLE
    assert_error_keeps_no_secret(error, PASSWORD)
