"""The mysql driver against a real local MariaDB server (no Kubernetes needed).

Everything connects to 127.0.0.1 (or 127.0.0.2 for the egress test) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pymysql.constants import CLIENT

import localmariadb
from driver_calls import (
    LONG_VALUE_CHECK,
    LONG_VALUES,
    ORDERS_UNDER_REPEATED_NAMES,
    SqlDriverCalls,
    SqlRequests,
    assert_error_keeps_no_secret,
    assert_orders_whole,
    assert_passed_with_a_value_cut,
    assert_stopped_at_the_result_cap,
    long_values_cut,
    outcome_texts,
    outliving_its_timeout,
    query,
    run,
    table,
)
from fake_tcp import FakeTcpServer
from localserver import free_port, stopping
from patchbay.api.connector import CheckSpec, HttpRequestSpec
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy, parse_networks
from patchbay.drivers.base import (
    MAX_VALUE_BYTES,
    NO_RESULT_SET,
    ColumnInfo,
    DriverError,
    RowSet,
    SqlBrowser,
    TlsMaterial,
    json_value,
)
from patchbay.drivers.mysql import MysqlDriver
from testpki import CertificateAuthority

DRIVER = MysqlDriver()
CALLS = SqlDriverCalls(DRIVER)
verify = CALLS.verify
verify_error = CALLS.error
APP_PASSWORD = "app-" + uuid.uuid4().hex
SERVER_NAME = "db.patchbay.test"
make_request = SqlRequests(
    {"host": "127.0.0.1", "database": "orders", "username": "app", "sslmode": "DISABLED"},
    APP_PASSWORD,
)


@pytest.fixture(scope="module")
def mdb(mariadb: localmariadb.MariadbServer) -> localmariadb.MariadbServer:
    """The session's server with the orders database and this module's users."""
    for statement in (
        "create database orders",
        "create table orders.orders (id int)",
        "insert into orders.orders values (1), (2), (3)",
        "create table orders.secrets (value text)",
        # app may write: only the driver keeps its checks from doing so.
        f"create user app identified by '{APP_PASSWORD}'",
        "grant select, insert, update, delete, create, drop on orders.* to app",
        f"create user limited identified by '{APP_PASSWORD}'",
        "grant select on orders.orders to limited",
        # A database-name pattern, as hosting providers grant: the server then says
        # whether a database exists.
        f"create user owner identified by '{APP_PASSWORD}'",
        r"grant all on `app\_%`.* to owner",
        f"create user slow identified by '{APP_PASSWORD}' with max_statement_time 0.2",
        "grant select on orders.* to slow",
    ):
        localmariadb.execute(mariadb, statement)
    return mariadb


def new_user(server: localmariadb.MariadbServer, password: str, grants: str = "") -> str:
    """A user of its own, so that the server's logs can be counted for one test."""
    user = f"u{uuid.uuid4().hex[:10]}"
    localmariadb.execute(server, f"create user {user} identified by '{password}'")
    if grants:
        localmariadb.execute(server, f"grant {grants} to {user}")
    return user


def order_count(server: localmariadb.MariadbServer) -> int:
    rows = localmariadb.execute(server, "select count(*) from orders.orders")
    return int(str(rows[0][0]))


def table_names(server: localmariadb.MariadbServer) -> set[str]:
    rows = localmariadb.execute(server, "show tables from orders")
    return {str(row[0]) for row in rows}


# --- fake servers -------------------------------------------------------------------------


def packet(sequence: int, body: bytes) -> bytes:
    return struct.pack("<I", len(body))[:3] + bytes([sequence]) + body


def error_packet(number: int, message: str) -> bytes:
    return packet(0, b"\xff" + struct.pack("<H", number) + b"#HY000" + message.encode())


def greeting(auth_plugin: str, *, tls: bool = False) -> bytes:
    """A server handshake (protocol 10) asking for ``auth_plugin``."""
    capabilities = (
        CLIENT.PROTOCOL_41
        | CLIENT.SECURE_CONNECTION
        | CLIENT.PLUGIN_AUTH
        | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
        | (CLIENT.SSL if tls else 0)
    )
    body = (
        b"\x0a5.5.5-10.11.0-MariaDB-fake\x00"
        + struct.pack("<I", 7)  # connection id
        + b"abcdefgh\x00"  # first part of the scramble
        + struct.pack("<H", capabilities & 0xFFFF)
        + b"\x2d"  # utf8mb4
        + struct.pack("<H", 2)  # autocommit
        + struct.pack("<H", capabilities >> 16)
        + bytes([21])  # scramble length
        + bytes(10)
        + b"ijklmnopqrst\x00"
        + auth_plugin.encode()
        + b"\x00"
    )
    return packet(0, body)


class FakeServer(FakeTcpServer):
    """Sends ``first`` on connect and records what clients send."""

    def __init__(self, first: bytes | None, *, hang_up: bool = False, host: str = "127.0.0.1"):
        super().__init__(host)
        self.first = first
        self.hang_up = hang_up
        self.received = b""

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.first is not None:
            writer.write(self.first)
            await writer.drain()
        if not self.hang_up:
            while chunk := await reader.read(4096):  # until the client goes away
                self.received += chunk


async def fake_verify_error(fake: FakeServer) -> DriverError:
    async with fake.serve():
        with pytest.raises(DriverError) as info:
            # A fake server never answers a login: a driver that tries one waits in vain.
            await asyncio.wait_for(verify(make_request(port=fake.port)), 10)
    return info.value


# --- login -------------------------------------------------------------------------------


def test_good_credentials_verify_with_the_server_version(
    mdb: localmariadb.MariadbServer,
) -> None:
    outcome = run(verify(make_request(mdb)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert outcome.server_version is not None
    product, _, number = outcome.server_version.partition(" ")
    assert product == "MariaDB"
    assert [part.isdigit() for part in number.split(".")] == [True, True, True]
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert outcome.checks == ()


def test_wrong_password_is_authentication_failed_after_exactly_one_login(
    mdb: localmariadb.MariadbServer,
) -> None:
    user = new_user(mdb, "right-password", "select on orders.*")
    error = verify_error(make_request(mdb, username=user, password="wrong-password"))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert not error.retryable
    assert f"Access denied for user '{user}'@" in error.message
    assert mdb.login_attempts(user) == 1
    assert mdb.refused_logins(user) == 1


def test_unknown_user_is_authentication_failed(mdb: localmariadb.MariadbServer) -> None:
    assert verify_error(make_request(mdb, username="ghost")).code == Reason.AUTHENTICATION_FAILED


def test_password_with_non_ascii_characters_verifies(mdb: localmariadb.MariadbServer) -> None:
    password = "pässwörd-ünïcode-€"
    user = new_user(mdb, password, "select on orders.*")
    outcome = run(verify(make_request(mdb, username=user, password=password)))
    assert outcome.code == Reason.VERIFIED


def test_missing_database_is_resource_not_found(mdb: localmariadb.MariadbServer) -> None:
    error = verify_error(make_request(mdb, username="owner", database="app_missing"))
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert "Unknown database 'app_missing'" in error.message


def test_database_outside_the_users_grants_is_permission_denied(
    mdb: localmariadb.MariadbServer,
) -> None:
    # The server does not say whether a database the user may not see exists.
    error = verify_error(make_request(mdb, database="nosuchdb"))
    assert error.code == Reason.PERMISSION_DENIED
    assert "to database 'nosuchdb'" in error.message


def test_hourly_connection_limit_is_rate_limited_and_retryable(
    mdb: localmariadb.MariadbServer,
) -> None:
    user = new_user(mdb, APP_PASSWORD, "select on orders.*")
    localmariadb.execute(mdb, f"alter user {user} with max_connections_per_hour 1")
    assert run(verify(make_request(mdb, username=user))).code == Reason.VERIFIED
    error = verify_error(make_request(mdb, username=user))
    assert error.code == Reason.RATE_LIMITED
    assert error.retryable


def test_closed_port_is_host_unreachable() -> None:
    error = verify_error(make_request(port=free_port()))
    assert error.code == Reason.HOST_UNREACHABLE
    assert "Connection refused" in error.message
    assert error.retryable


def test_invalid_inputs_are_config_invalid() -> None:
    for request in (
        make_request(sslmode="sometimes"),
        make_request(port="mysql"),
        make_request(port=70000),
        make_request(host=""),
        make_request(username=""),
    ):
        assert verify_error(request).code == Reason.CONFIG_INVALID


def test_sslmode_is_case_insensitive(mdb: localmariadb.MariadbServer) -> None:
    assert run(verify(make_request(mdb, sslmode="disabled"))).code == Reason.VERIFIED


def test_sslmode_required_against_a_server_without_tls_sends_nothing_about_the_account(
    mdb: localmariadb.MariadbServer,
) -> None:
    user = new_user(mdb, APP_PASSWORD, "select on orders.*")
    error = verify_error(make_request(mdb, username=user, sslmode="REQUIRED"))
    assert error.code == Reason.TLS_ERROR
    assert "does not support TLS" in error.message
    assert mdb.login_attempts(user) == 0


def test_sslmode_preferred_falls_back_to_plain_without_server_tls(
    mdb: localmariadb.MariadbServer,
) -> None:
    assert run(verify(make_request(mdb, sslmode="PREFERRED"))).code == Reason.VERIFIED


def test_unanswering_server_is_cut_off_by_the_callers_timeout_and_closed() -> None:
    async def scenario() -> None:
        fake = FakeServer(None)
        async with fake.serve():
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(verify(make_request(port=fake.port)), 1.0)
            assert fake.connections == 1
            # The cancelled driver hangs up instead of leaving the socket open.
            await asyncio.wait_for(fake.closed.wait(), 10)

    run(scenario())


def test_server_silent_during_the_tls_handshake_is_cut_off_and_closed() -> None:
    async def scenario() -> None:
        fake = FakeServer(greeting("mysql_native_password", tls=True))
        async with fake.serve():
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(verify(make_request(port=fake.port, sslmode="REQUIRED")), 1)
            await asyncio.wait_for(fake.closed.wait(), 10)

    run(scenario())


@pytest.mark.parametrize(
    ("first", "hang_up"),
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", True, id="http-server"),
        pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n", True, id="ssh-server"),
        pytest.param(None, True, id="closes-at-once"),
        pytest.param(packet(0, b"\x0a"), True, id="truncated-greeting"),
    ],
)
def test_server_not_speaking_mysql_is_protocol_error(first: bytes | None, hang_up: bool) -> None:
    error = run(fake_verify_error(FakeServer(first, hang_up=hang_up)))
    assert error.code == Reason.PROTOCOL_ERROR


def test_other_server_error_at_login_is_provider_error_with_its_message() -> None:
    error = run(fake_verify_error(FakeServer(error_packet(1105, "the fake server says no"))))
    assert error.code == Reason.PROVIDER_ERROR
    assert error.message.endswith("the fake server says no")


def test_too_many_connections_at_greeting_is_rate_limited() -> None:
    error = run(fake_verify_error(FakeServer(error_packet(1040, "Too many connections"))))
    assert error.code == Reason.RATE_LIMITED


def test_clear_text_password_request_without_tls_gets_no_password() -> None:
    fake = FakeServer(greeting("mysql_clear_password"))
    error = run(fake_verify_error(fake))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert "clear text" in error.message
    assert fake.received == b""


def test_clear_text_password_switch_without_tls_gets_no_password() -> None:
    # The server first asks for the usual method, then switches to clear text.
    switch = packet(2, b"\xfemysql_clear_password\x00")

    class Switching(FakeServer):
        after_switch = b""

        async def converse(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            writer.write(greeting("mysql_native_password"))
            await writer.drain()
            header = await reader.readexactly(4)
            self.received = await reader.readexactly(struct.unpack("<I", header[:3] + b"\0")[0])
            writer.write(switch)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                self.after_switch = await asyncio.wait_for(reader.read(4096), 10)

    async def scenario() -> tuple[DriverError, bytes]:
        fake = Switching(None)
        error = await fake_verify_error(fake)
        await asyncio.wait_for(fake.closed.wait(), 10)
        return error, fake.after_switch

    error, after_switch = run(scenario())
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert after_switch == b""


def test_egress_denied_host_is_never_contacted() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> tuple[DriverError, int]:
        fake = FakeServer(greeting("mysql_native_password"), host="127.0.0.2")
        async with fake.serve():
            with pytest.raises(DriverError) as info:
                await verify(make_request(host="127.0.0.2", port=fake.port), policy)
        return info.value, fake.connections

    error, connections = run(scenario())
    assert error.code == Reason.EGRESS_DENIED
    assert connections == 0


def test_wrong_canary_password_appears_in_no_message(mdb: localmariadb.MariadbServer) -> None:
    canary = f"canary-{uuid.uuid4()}"
    error = verify_error(make_request(mdb, password=canary))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert_error_keeps_no_secret(error, canary)


def test_canary_password_appears_in_no_outcome_message(mdb: localmariadb.MariadbServer) -> None:
    canary = f"canary-{uuid.uuid4()}"
    user = new_user(mdb, canary, "select on orders.orders")
    request = make_request(
        mdb,
        username=user,
        password=canary,
        checks=(query("select * from secrets"), table("orders.nope"), query("selec 1")),
    )
    outcome = run(verify(request))
    assert outcome.code == Reason.PERMISSION_DENIED
    assert all(canary not in text for text in outcome_texts(outcome))


# --- checks ------------------------------------------------------------------------------


def test_query_checks_pass(mdb: localmariadb.MariadbServer) -> None:
    checks = (
        query("select 1"),
        query("select id from orders order by id"),  # several rows: reads only the first
        query("select id from orders where false"),  # no rows is still a success
        query("select '100%'"),  # no placeholder processing
        query("select id from orders limit 3"),  # a LIMIT of its own
        query("select table_name from information_schema.tables"),
        query("with recent as (select id from orders) select * from recent"),
        query("select 1;"),
    )
    outcome = run(verify(make_request(mdb, checks=checks)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert [c.result for c in outcome.checks] == ["Succeeded"] * len(checks)
    assert outcome.checks[1].target == "select id from orders order by id"


def test_query_check_on_unreadable_table_is_permission_denied(
    mdb: localmariadb.MariadbServer,
) -> None:
    checks = (query("select 1"), query("select * from secrets"))
    outcome = run(verify(make_request(mdb, username="limited", checks=checks)))
    assert (outcome.result, outcome.code) == ("Failed", Reason.PERMISSION_DENIED)
    assert not outcome.retryable
    assert outcome.checks[0].result == "Succeeded"
    assert outcome.checks[1].code == Reason.PERMISSION_DENIED
    assert "SELECT command denied to user 'limited'" in outcome.checks[1].message


def test_query_check_syntax_error_is_provider_error_with_message(
    mdb: localmariadb.MariadbServer,
) -> None:
    outcome = run(verify(make_request(mdb, checks=(query("selec 1"),))))
    assert outcome.checks[0].code == Reason.PROVIDER_ERROR
    assert "You have an error in your SQL syntax" in outcome.checks[0].message


def test_query_check_cannot_write(mdb: localmariadb.MariadbServer) -> None:
    before = order_count(mdb), table_names(mdb)
    writes = (
        query("insert into orders values (99)"),
        query("update orders set id = 0"),
        query("delete from orders"),
        query("delete from orders returning id"),
        query("create table extra (id int)"),
        query("drop table secrets"),
        query("select * from orders for update"),
    )
    # Each is refused before it runs: a session made read-write, then DDL whose implicit
    # commit would end the read-only transaction, then a write.
    escapes = (
        query("set session transaction read write"),
        query("commit"),
        query("create table extra_two (id int)"),
        query("insert into orders values (100)"),
        query("select 1; delete from orders"),
        query("commit; delete from orders; start transaction"),
        query("show tables"),
    )
    outcome = run(verify(make_request(mdb, checks=writes + escapes)))
    assert [(c.result, c.code) for c in outcome.checks] == [("Failed", Reason.CONFIG_INVALID)] * (
        len(writes) + len(escapes)
    )
    # The server refuses some at once, when preparing them; none runs.
    assert all(
        "READ ONLY transaction" in c.message or NO_RESULT_SET in c.message
        for c in outcome.checks[: len(writes) + 4]
    )
    messages = [c.message for c in outcome.checks[len(writes) :]]
    assert all(m.startswith("only one statement may run here") for m in messages[4:6])
    assert messages[6].startswith("only a query may run here")
    assert (order_count(mdb), table_names(mdb)) == before


def test_query_check_calling_a_writing_function_is_refused_by_the_read_only_transaction(
    mdb: localmariadb.MariadbServer,
) -> None:
    localmariadb.execute(
        mdb,
        "create function orders.add_order() returns int modifies sql data"
        " begin insert into orders.orders values (97); return 97; end",
    )
    localmariadb.execute(mdb, "grant execute on function orders.add_order to app")
    before = order_count(mdb)
    outcome = run(verify(make_request(mdb, checks=(query("select add_order()"),))))
    assert (outcome.checks[0].result, outcome.checks[0].code) == ("Failed", Reason.CONFIG_INVALID)
    assert "READ ONLY transaction" in outcome.checks[0].message
    assert order_count(mdb) == before


def test_query_check_without_a_result_set_is_config_invalid(
    mdb: localmariadb.MariadbServer,
) -> None:
    checks = (query("set @x = 1"), query("  "), query("do 1"))
    outcome = run(verify(make_request(mdb, checks=checks)))
    assert [c.code for c in outcome.checks] == [Reason.CONFIG_INVALID] * 3


def test_query_check_stopped_by_the_servers_statement_limit_is_timeout(
    mdb: localmariadb.MariadbServer,
) -> None:
    heavy = query("select sleep(30)")
    outcome = run(verify(make_request(mdb, username="slow", checks=(heavy,))))
    assert (outcome.result, outcome.code) == ("Unknown", Reason.TIMEOUT)
    assert outcome.retryable


def running_statements(server: localmariadb.MariadbServer, marker: str) -> int:
    """How many statements containing ``marker`` the server is running for app."""
    rows = localmariadb.execute(
        server,
        "select count(*) from information_schema.processlist where user = 'app'"
        f" and command = 'Query' and info like '%{marker}%' and id <> connection_id()",
    )
    return int(str(rows[0][0]))


@outliving_its_timeout(
    "the-servers-statement-time-limit", "kill-query-when-the-callers-timeout-ends"
)
def test_query_check_outliving_its_timeout_is_timeout_and_stops_on_the_server(
    mdb: localmariadb.MariadbServer, server_limit: float | None, caller_limit: float
) -> None:
    # BENCHMARK, unlike SLEEP, runs on after the client has gone, until it is killed.
    marker = uuid.uuid4().hex
    busy = f"select benchmark(10000000000, md5('{marker}'))"
    request = replace(make_request(mdb, checks=(query(busy),)), timeout_seconds=server_limit)
    outcome, still_running = CALLS.outcome_and_still_running(
        request, caller_limit, lambda: running_statements(mdb, marker)
    )
    assert outcome.code == Reason.TIMEOUT
    assert still_running == 0


def test_query_cuts_long_values_on_the_server_and_says_truncated(
    mdb: localmariadb.MariadbServer,
) -> None:
    rows = CALLS.rows(make_request(mdb), f"{LONG_VALUES}, unhex(repeat('ab', 100000)) as raw")
    assert rows.columns[3:] == ("raw",)
    (raw,) = long_values_cut(rows)
    assert raw == json_value(b"\xab" * MAX_VALUE_BYTES)


def test_query_stops_reading_at_the_result_cap(mdb: localmariadb.MariadbServer) -> None:
    sql = "select repeat('y', 60000) from information_schema.columns"
    assert_stopped_at_the_result_cap(CALLS.rows(make_request(mdb), sql, 1000), 1000)


def test_query_within_the_caps_is_whole(mdb: localmariadb.MariadbServer) -> None:
    assert_orders_whole(CALLS.rows(make_request(mdb), ORDERS_UNDER_REPEATED_NAMES, 3))


def test_query_runs_only_queries(mdb: localmariadb.MariadbServer) -> None:
    before = order_count(mdb), table_names(mdb)
    for sql, message in (
        ("commit; delete from orders", "only one statement"),
        ("set session transaction read write", "no result set"),
        ("show tables", "only a query may run here"),
    ):
        refused = CALLS.refusal(make_request(mdb), sql)
        assert refused.code == Reason.CONFIG_INVALID
        assert message in refused.message
    assert (order_count(mdb), table_names(mdb)) == before


def test_sample_cuts_long_values(mdb: localmariadb.MariadbServer) -> None:
    for statement in (
        "create table orders.documents (body longtext)",
        "insert into orders.documents select repeat('z', 200000) from orders.orders",
    ):
        localmariadb.execute(mdb, statement)
    rows = CALLS.browse(make_request(mdb), lambda b: b.sample("orders", "documents", 3))
    assert rows.truncated
    assert [row[0] for row in rows.rows] == ["z" * MAX_VALUE_BYTES] * 3


def test_sample_and_query_name_each_columns_type_as_the_server_spells_it(
    mdb: localmariadb.MariadbServer,
) -> None:
    for statement in (
        "create table orders.typed (id int unsigned primary key, name varchar(20) not null,"
        " amount decimal(10, 2), note text, raw varbinary(8), kind enum('a', 'b'))",
        "insert into orders.typed values (1, 'one', 2.50, null, 'xy', 'a')",
    ):
        localmariadb.execute(mdb, statement)

    async def browsed(browser: SqlBrowser) -> tuple[list[ColumnInfo], RowSet, RowSet]:
        return (
            await browser.columns("orders", "typed"),
            await browser.sample("orders", "typed", 5),
            await browser.query("select cast(id as signed) as big, now() as at from typed", 5),
        )

    columns, sample, queried = CALLS.browse(make_request(mdb), browsed)
    assert [(c.name, c.nullable, c.primary_key) for c in columns] == [
        ("id", False, True),
        ("name", False, False),
        ("amount", True, False),
        ("note", True, False),
        ("raw", True, False),
        ("kind", True, False),
    ]
    # The catalog adds display widths and enum values; a result's metadata has neither.
    assert sample.types == (
        "int unsigned",
        "varchar(20)",
        "decimal(10,2)",
        "text",
        "varbinary(8)",
        "enum",
    )
    assert queried.types == ("bigint", "datetime")


def test_query_check_with_a_long_value_passes_and_says_it_was_cut(
    mdb: localmariadb.MariadbServer,
) -> None:
    outcome = run(verify(make_request(mdb, checks=(LONG_VALUE_CHECK,))))
    assert_passed_with_a_value_cut(outcome.checks[0])


def test_table_checks(mdb: localmariadb.MariadbServer) -> None:
    checks = (table("orders"), table("orders.orders"), table("orders.missing"), table("missing"))
    outcome = run(verify(make_request(mdb, checks=checks)))
    assert [(c.target, c.result, c.code) for c in outcome.checks] == [
        ("orders", "Succeeded", Reason.VERIFIED),
        ("orders.orders", "Succeeded", Reason.VERIFIED),
        ("orders.missing", "Failed", Reason.RESOURCE_NOT_FOUND),
        ("missing", "Failed", Reason.RESOURCE_NOT_FOUND),
    ]
    assert outcome.code == Reason.RESOURCE_NOT_FOUND


def test_table_check_without_grants_is_permission_denied(
    mdb: localmariadb.MariadbServer,
) -> None:
    checks = (table("orders.orders"), table("orders.secrets"), table("mysql.user"))
    outcome = run(verify(make_request(mdb, username="limited", checks=checks)))
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Succeeded", Reason.VERIFIED),
        ("Failed", Reason.PERMISSION_DENIED),
        ("Failed", Reason.PERMISSION_DENIED),
    ]
    assert outcome.code == Reason.PERMISSION_DENIED


def test_table_check_quotes_the_name(mdb: localmariadb.MariadbServer) -> None:
    checks = (table("orders`; drop table orders; --"), table("orders.orders` limit 0; --"))
    outcome = run(verify(make_request(mdb, checks=checks)))
    assert [c.code for c in outcome.checks] == [Reason.RESOURCE_NOT_FOUND] * 2
    assert order_count(mdb) >= 3


def test_other_check_types_are_not_supported(mdb: localmariadb.MariadbServer) -> None:
    checks = (
        CheckSpec(type="listFiles", path="/data"),
        CheckSpec(type="http", http=HttpRequestSpec(path="/health")),
    )
    outcome = run(verify(make_request(mdb, checks=checks)))
    assert [(c.result, c.code, c.message) for c in outcome.checks] == [
        ("Failed", Reason.CONFIG_INVALID, f"check type {t} is not supported by the mysql driver")
        for t in ("listFiles", "http")
    ]


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_mdb(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[localmariadb.MariadbServer, CertificateAuthority]]:
    """A second server that requires TLS; yields it and its CA (which also signs clients)."""
    ca = CertificateAuthority.create("patchbay test CA")
    cert, key = ca.leaf_text(SERVER_NAME)
    tls = localmariadb.ServerTls(cert_pem=cert, key_pem=key, ca_pem=ca.cert_text, require=True)
    with stopping(
        localmariadb.start_mariadb(tmp_path_factory.mktemp("mariadb-tls"), tls)
    ) as server:
        localmariadb.execute(server, "create database orders")
        localmariadb.execute(server, f"create user app identified by '{APP_PASSWORD}'")
        localmariadb.execute(server, "grant select on orders.* to app")
        localmariadb.execute(
            server, f"create user certified identified by '{APP_PASSWORD}' require x509"
        )
        localmariadb.execute(server, "grant select on orders.* to certified")
        yield server, ca


def test_verify_identity_with_the_right_ca_and_name_verifies(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, ca = tls_mdb
    tls = TlsMaterial(ca_pem=ca.cert_text, server_name=SERVER_NAME)
    outcome = run(verify(make_request(server, sslmode="VERIFY_IDENTITY", tls=tls)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)


def test_verify_identity_with_another_ca_is_tls_error_before_login(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, _ = tls_mdb
    before = server.login_attempts("app")
    tls = TlsMaterial(
        ca_pem=CertificateAuthority.create("someone else").cert_text, server_name=SERVER_NAME
    )
    error = verify_error(make_request(server, sslmode="VERIFY_IDENTITY", tls=tls))
    assert error.code == Reason.TLS_ERROR
    assert "TLS certificate verification failed" in error.message
    assert server.login_attempts("app") == before


def test_verify_identity_with_a_wrong_name_is_tls_error(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, ca = tls_mdb
    tls = TlsMaterial(ca_pem=ca.cert_text, server_name="other.patchbay.test")
    error = verify_error(make_request(server, sslmode="VERIFY_IDENTITY", tls=tls))
    assert error.code == Reason.TLS_ERROR
    assert "other.patchbay.test" in error.message


def test_verify_ca_does_not_check_the_name(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, ca = tls_mdb
    tls = TlsMaterial(ca_pem=ca.cert_text, server_name="other.patchbay.test")
    outcome = run(verify(make_request(server, sslmode="VERIFY_CA", tls=tls)))
    assert outcome.code == Reason.VERIFIED


def test_verify_ca_without_a_ca_uses_system_roots(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, _ = tls_mdb
    assert verify_error(make_request(server, sslmode="VERIFY_CA")).code == Reason.TLS_ERROR


def test_sslmode_required_and_preferred_encrypt_without_checking_the_certificate(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, _ = tls_mdb
    for sslmode in ("REQUIRED", "PREFERRED"):
        assert run(verify(make_request(server, sslmode=sslmode))).code == Reason.VERIFIED


def test_unencrypted_login_to_a_server_requiring_tls_is_refused_with_a_hint(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, _ = tls_mdb
    error = verify_error(make_request(server, sslmode="DISABLED"))
    # MariaDB refuses it as it refuses a wrong password, without saying why.
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert "sslmode is DISABLED" in error.message


def test_client_certificate_is_presented_and_removed_afterwards(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority], private_tmp: Path
) -> None:
    server, ca = tls_mdb
    cert, key = ca.leaf_text("client", server=False)
    tls = TlsMaterial(
        ca_pem=ca.cert_text, client_cert_pem=cert, client_key_pem=key, server_name=SERVER_NAME
    )
    request = make_request(server, username="certified", sslmode="VERIFY_IDENTITY", tls=tls)
    assert run(verify(request)).code == Reason.VERIFIED
    assert list(private_tmp.iterdir()) == []


def test_account_requiring_a_client_certificate_without_one_is_authentication_failed(
    tls_mdb: tuple[localmariadb.MariadbServer, CertificateAuthority],
) -> None:
    server, ca = tls_mdb
    tls = TlsMaterial(ca_pem=ca.cert_text, server_name=SERVER_NAME)
    request = make_request(server, username="certified", sslmode="VERIFY_IDENTITY", tls=tls)
    assert verify_error(request).code == Reason.AUTHENTICATION_FAILED
