"""The postgres driver against a real local PostgreSQL server (no Kubernetes needed).

Everything connects to 127.0.0.1 (or 127.0.0.2 for the egress test) only.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

import localpostgres
from driver_calls import (
    LONG_VALUE_CHECK,
    LONG_VALUES,
    OPEN_POLICY,
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
    ColumnInfo,
    DriverError,
    RowSet,
    SqlBrowser,
    TableInfo,
    TlsMaterial,
)
from patchbay.drivers.postgres import PostgresDriver, _classify
from testpki import CertificateAuthority

DRIVER = PostgresDriver()
CALLS = SqlDriverCalls(DRIVER)
verify = CALLS.verify
verify_error = CALLS.error
APP_PASSWORD = "app-" + uuid.uuid4().hex
SERVER_NAME = "db.patchbay.test"
make_request = SqlRequests(
    {"host": "127.0.0.1", "database": "orders", "username": "app"}, APP_PASSWORD
)


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localpostgres.PostgresServer]:
    with stopping(localpostgres.start_postgres(tmp_path_factory.mktemp("postgres"))) as server:
        ex = localpostgres.execute
        ex(server, "create database orders")
        ex(
            server,
            f"create role app login password '{APP_PASSWORD}';"
            f"create role nologin nologin password '{APP_PASSWORD}';"
            f"create role crowded login connection limit 0 password '{APP_PASSWORD}';"
            f"create role noconnect login password '{APP_PASSWORD}';"
            f"create role slow login password '{APP_PASSWORD}';"
            "alter role slow set statement_timeout = '100ms';"
            "revoke connect on database orders from public;"
            "grant connect on database orders to app, crowded, slow",
        )
        ex(
            server,
            "create table public.orders (id int);"
            "insert into public.orders values (1), (2), (3);"
            "grant select, insert on public.orders to app;"
            "create table public.secrets (value text);"
            "revoke all on public.secrets from public",
            dbname="orders",
        )
        yield server


def order_count(server: localpostgres.PostgresServer) -> int:
    return int(localpostgres.execute(server, "select count(*) from public.orders", "orders")[0][0])


# --- fake servers -------------------------------------------------------------------------

CLOSE = object()
SSL_REQUEST_CODE = 80877103


def is_ssl_request(packet: bytes) -> bool:
    return len(packet) == 4 and struct.unpack("!I", packet)[0] == SSL_REQUEST_CODE


def error_response(sqlstate: str, message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class Listener(FakeTcpServer):
    """Answers each client packet with ``answer(packet)``."""

    def __init__(self, answer: Callable[[bytes], bytes | object], host: str = "127.0.0.1"):
        super().__init__(host)
        self.answer = answer

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            # Untagged startup-phase packets: int32 length (including itself), body.
            header = await reader.readexactly(4)
            packet = await reader.readexactly(struct.unpack("!I", header)[0] - 4)
            reply = self.answer(packet)
            if reply is CLOSE:
                break
            if isinstance(reply, bytes) and reply:
                writer.write(reply)
                await writer.drain()


async def listener_error(
    listener: Listener, policy: EgressPolicy = OPEN_POLICY, **config: str | int
) -> tuple[DriverError, int]:
    """The error of a verification against ``listener``, and how many connections it saw."""
    async with listener.serve():
        with pytest.raises(DriverError) as info:
            await verify(make_request(port=listener.port, **config), policy)
    return info.value, listener.connections


# --- login -------------------------------------------------------------------------------


def test_good_credentials_verify(pg: localpostgres.PostgresServer) -> None:
    outcome = run(verify(make_request(pg)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert outcome.server_version is not None
    assert outcome.server_version.startswith("PostgreSQL ")
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert outcome.checks == ()


def test_wrong_password_is_authentication_failed_and_not_retryable(
    pg: localpostgres.PostgresServer,
) -> None:
    error = verify_error(make_request(pg, password="wrong"))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert not error.retryable
    assert 'password authentication failed for user "app"' in error.message


def test_unknown_role_is_authentication_failed(pg: localpostgres.PostgresServer) -> None:
    assert verify_error(make_request(pg, username="ghost")).code == Reason.AUTHENTICATION_FAILED


def test_role_without_login_is_authentication_failed(pg: localpostgres.PostgresServer) -> None:
    error = verify_error(make_request(pg, username="nologin"))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert "not permitted to log in" in error.message


def test_required_scram_sends_no_password_to_a_server_asking_for_it_in_clear_text() -> None:
    passwords: list[bytes] = []
    clear_text_please = b"R" + struct.pack("!II", 8, 3)  # AuthenticationCleartextPassword

    class CleartextServer(FakeTcpServer):
        async def converse(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            header = await reader.readexactly(4)
            await reader.readexactly(struct.unpack("!I", header)[0] - 4)  # StartupMessage
            writer.write(clear_text_please)
            await writer.drain()
            tag = await reader.read(1)
            if tag == b"p":  # PasswordMessage
                passwords.append(await reader.read(1024))

    async def attempt(**config: str) -> DriverError:
        server = CleartextServer()
        async with server.serve():
            with pytest.raises(DriverError) as info:
                await verify(make_request(port=server.port, sslmode="disable", **config))
        return info.value

    refused = run(attempt(requireAuth="scram-sha-256"))
    assert refused.code == Reason.CONFIG_INVALID
    assert "server requested a cleartext password" in refused.message
    assert passwords == []
    # without the requirement, libpq hands the password over: what the catalogue prevents
    run(attempt())
    assert len(passwords) == 1 and APP_PASSWORD.encode() in passwords[0]


def test_require_auth_that_is_no_method_list_is_config_invalid() -> None:
    error = verify_error(make_request(port=1, requireAuth="scram; drop"))
    assert error.code == Reason.CONFIG_INVALID
    assert "requireAuth" in error.message


def test_missing_database_is_resource_not_found(pg: localpostgres.PostgresServer) -> None:
    error = verify_error(make_request(pg, database="nosuchdb"))
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert 'database "nosuchdb" does not exist' in error.message


def test_database_without_connect_privilege_is_permission_denied(
    pg: localpostgres.PostgresServer,
) -> None:
    error = verify_error(make_request(pg, username="noconnect"))
    assert error.code == Reason.PERMISSION_DENIED
    assert not error.retryable


def test_connection_limit_is_rate_limited_and_retryable(pg: localpostgres.PostgresServer) -> None:
    error = verify_error(make_request(pg, username="crowded"))
    assert error.code == Reason.RATE_LIMITED
    assert error.retryable


def test_closed_port_is_host_unreachable() -> None:
    error = verify_error(make_request(port=free_port()))
    assert error.code == Reason.HOST_UNREACHABLE
    assert error.retryable


def test_sslmode_require_against_server_without_ssl_is_tls_error(
    pg: localpostgres.PostgresServer,
) -> None:
    error = verify_error(make_request(pg, sslmode="require"))
    assert error.code == Reason.TLS_ERROR
    assert "does not support SSL" in error.message


def test_invalid_inputs_are_config_invalid() -> None:
    for request in (
        make_request(sslmode="sometimes"),
        make_request(port="http"),
        make_request(port=70000),
        make_request(host=""),
    ):
        assert verify_error(request).code == Reason.CONFIG_INVALID


def test_unanswering_server_is_cut_off_by_the_callers_timeout_and_closed() -> None:
    async def scenario() -> None:
        async with Listener(lambda packet: b"").serve() as listener:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(verify(make_request(port=listener.port)), 1.0)
            assert listener.connected.is_set()
            # The cancelled driver hangs up instead of leaving the socket open.
            await asyncio.wait_for(listener.closed.wait(), 10)

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda packet: b"X", id="garbage-ssl-answer"),
        pytest.param(
            lambda packet: b"N" if is_ssl_request(packet) else b"HTTP/1.1 400 Bad Request\r\n\r\n",
            id="http-server",
        ),
        pytest.param(lambda packet: CLOSE, id="closes-at-once"),
    ],
)
def test_server_not_speaking_postgres_is_protocol_error(
    answer: Callable[[bytes], bytes | object],
) -> None:
    error, _ = run(listener_error(Listener(answer)))
    assert error.code == Reason.PROTOCOL_ERROR


def test_other_server_error_at_login_is_provider_error_with_its_message() -> None:
    def answer(packet: bytes) -> bytes:
        if is_ssl_request(packet):
            return b"N"
        return error_response("XX000", "the fake server says no")

    error, _ = run(listener_error(Listener(answer)))
    assert error.code == Reason.PROVIDER_ERROR
    assert error.message.endswith("the fake server says no")


def test_psycopg_connect_timeout_is_timeout() -> None:
    error = _classify(psycopg.errors.ConnectionTimeout("connection timeout expired"))
    assert error.code == Reason.TIMEOUT


def test_egress_denied_host_is_never_contacted(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    async def no_connect(*args: object, **kwargs: object) -> None:
        attempts.append(kwargs)
        raise AssertionError("the driver tried to connect")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", no_connect)
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    listener = Listener(lambda packet: CLOSE, host="127.0.0.2")
    error, connections = run(listener_error(listener, policy, host="127.0.0.2"))
    assert error.code == Reason.EGRESS_DENIED
    assert connections == 0
    assert attempts == []


def test_wrong_canary_password_appears_in_no_message(pg: localpostgres.PostgresServer) -> None:
    canary = f"canary-{uuid.uuid4()}"
    error = verify_error(make_request(pg, password=canary))
    assert error.code == Reason.AUTHENTICATION_FAILED
    # psycopg's exception keeps the connection, whose repr shows the password.
    assert_error_keeps_no_secret(error, canary)


def test_canary_password_appears_in_no_outcome_message(pg: localpostgres.PostgresServer) -> None:
    canary = f"canary-{uuid.uuid4()}"
    localpostgres.execute(pg, f"create role canary login password '{canary}'")
    localpostgres.execute(pg, "grant connect on database orders to canary")
    request = make_request(
        pg,
        username="canary",
        password=canary,
        checks=(query("select * from secrets"), table("public.nope"), query("selec 1")),
    )
    outcome = run(verify(request))
    assert outcome.code == Reason.PERMISSION_DENIED
    assert all(canary not in text for text in outcome_texts(outcome))


# --- checks ------------------------------------------------------------------------------


def test_query_checks_pass(pg: localpostgres.PostgresServer) -> None:
    checks = (
        query("select 1"),
        query("select id from orders order by id"),  # several rows: stops after the first
        query("select id from orders where false"),  # no rows is still a success
        query("select '100%'"),  # no placeholder processing
    )
    outcome = run(verify(make_request(pg, checks=checks)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert [c.result for c in outcome.checks] == ["Succeeded"] * 4
    assert outcome.checks[1].target == "select id from orders order by id"


def test_query_check_target_is_truncated(pg: localpostgres.PostgresServer) -> None:
    sql = "select 1 " + "-" * 300
    outcome = run(verify(make_request(pg, checks=(query(sql),))))
    assert outcome.checks[0].target == sql[:200]


def test_query_check_on_unreadable_table_is_permission_denied(
    pg: localpostgres.PostgresServer,
) -> None:
    outcome = run(
        verify(make_request(pg, checks=(query("select 1"), query("select * from secrets"))))
    )
    assert (outcome.result, outcome.code) == ("Failed", Reason.PERMISSION_DENIED)
    assert not outcome.retryable
    assert outcome.checks[0].result == "Succeeded"
    assert outcome.checks[1].code == Reason.PERMISSION_DENIED
    assert outcome.checks[1].message == "permission denied for table secrets"


def test_query_check_syntax_error_is_provider_error_with_message(
    pg: localpostgres.PostgresServer,
) -> None:
    outcome = run(verify(make_request(pg, checks=(query("selec 1"),))))
    assert outcome.checks[0].code == Reason.PROVIDER_ERROR
    assert 'syntax error at or near "selec"' in outcome.checks[0].message


def test_query_check_cannot_write(pg: localpostgres.PostgresServer) -> None:
    before = order_count(pg)
    refused_shapes = (
        "insert into orders values (99) returning id",
        "with gone as (delete from orders returning id) select * from gone",
        "explain analyze delete from orders",
    )
    several_statements = (
        "select 1; delete from orders",
        "commit; delete from orders",
        "commit; delete from orders; begin",
    )
    # Neither statement runs: each is only parsed, and has no result.
    read_write = (
        "set session characteristics as transaction read write",
        "set transaction read write",
        "commit",
        "prepare gone as delete from orders returning id",
        "do $$ begin delete from orders; end $$",
    )
    checks = tuple(
        query(sql)
        for sql in (
            *refused_shapes,
            *several_statements,
            *read_write,
            "execute gone",
            "insert into orders values (98) returning id",
            "delete from orders",
        )
    )
    outcome = run(verify(make_request(pg, checks=checks)))
    assert [(c.result, c.code) for c in outcome.checks[:-3]] == [
        ("Failed", Reason.CONFIG_INVALID)
    ] * (len(checks) - 3)
    assert all("only a query may run here" in c.message for c in outcome.checks[:3])
    assert all("only one statement" in c.message for c in outcome.checks[3:6])
    # The prepared statement was never made, and what follows is refused as before.
    assert [c.result for c in outcome.checks[-3:]] == ["Failed"] * 3
    assert outcome.checks[-2].code == Reason.CONFIG_INVALID
    assert outcome.checks[-1].code == Reason.CONFIG_INVALID
    assert order_count(pg) == before


def test_query_check_calling_a_writing_function_is_refused_by_the_read_only_transaction(
    pg: localpostgres.PostgresServer,
) -> None:
    localpostgres.execute(
        pg,
        "create or replace function public.add_order() returns int language sql"
        " as 'insert into public.orders values (97) returning id';"
        "grant execute on function public.add_order() to app",
        "orders",
    )
    before = order_count(pg)
    outcome = run(verify(make_request(pg, checks=(query("select public.add_order()"),))))
    assert (outcome.checks[0].result, outcome.checks[0].code) == ("Failed", Reason.CONFIG_INVALID)
    assert "read-only transaction" in outcome.checks[0].message
    assert order_count(pg) == before


def test_query_check_without_a_result_set_is_config_invalid(
    pg: localpostgres.PostgresServer,
) -> None:
    checks = (query("set search_path = public"), query("  "))
    outcome = run(verify(make_request(pg, checks=checks)))
    assert [c.code for c in outcome.checks] == [Reason.CONFIG_INVALID] * 2


def test_query_check_cancelled_by_server_statement_timeout_is_timeout(
    pg: localpostgres.PostgresServer,
) -> None:
    request = make_request(pg, username="slow", checks=(query("select pg_sleep(30)"),))
    outcome = run(verify(request))
    assert (outcome.result, outcome.code) == ("Unknown", Reason.TIMEOUT)
    assert outcome.retryable


def sleeping_statements(server: localpostgres.PostgresServer, marker: str) -> int:
    """How many statements containing ``marker`` the server is running for app."""
    rows = localpostgres.execute(
        server,
        "select count(*) from pg_stat_activity where usename = 'app' and state = 'active'"
        f" and query like '%{marker}%' and pid <> pg_backend_pid()",
    )
    return int(rows[0][0])


@outliving_its_timeout("the-servers-statement-timeout", "a-cancel-when-the-callers-timeout-ends")
def test_query_check_outliving_its_timeout_is_timeout_and_stops_on_the_server(
    pg: localpostgres.PostgresServer, server_limit: float | None, caller_limit: float
) -> None:
    marker = f"pg_sleep(30.{uuid.uuid4().int % 10**6})"
    request = replace(
        make_request(pg, checks=(query(f"select {marker}"),)), timeout_seconds=server_limit
    )
    outcome, still_running = CALLS.outcome_and_still_running(
        request, caller_limit, lambda: sleeping_statements(pg, marker)
    )
    assert outcome.code == Reason.TIMEOUT
    assert still_running == 0


def test_query_cuts_long_values_on_the_server_and_says_truncated(
    pg: localpostgres.PostgresServer,
) -> None:
    rows = CALLS.rows(
        make_request(pg),
        f"{LONG_VALUES}, '{{\"a\": 1}}'::json as doc, decode(repeat('ab', 100000), 'hex') as raw",
    )
    assert rows.columns[3:] == ("doc", "raw")
    doc, raw = long_values_cut(rows)
    assert doc == {"a": 1}  # within the cap: keeps its type
    assert isinstance(raw, str) and len(raw.encode()) <= MAX_VALUE_BYTES


def test_query_stops_reading_at_the_result_cap(pg: localpostgres.PostgresServer) -> None:
    sql = "select repeat('y', 60000) from generate_series(1, 1000)"
    assert_stopped_at_the_result_cap(CALLS.rows(make_request(pg), sql, 1000), 1000)


def test_query_within_the_caps_is_whole(pg: localpostgres.PostgresServer) -> None:
    assert_orders_whole(CALLS.rows(make_request(pg), ORDERS_UNDER_REPEATED_NAMES, 3))


def test_query_runs_only_queries(pg: localpostgres.PostgresServer) -> None:
    before = order_count(pg)
    for sql, message in (
        ("commit; delete from orders", "only one statement"),
        ("delete from orders returning id", "only a query may run here"),
        ("set transaction read write", "no result set"),
    ):
        refused = CALLS.refusal(make_request(pg), sql)
        assert refused.code == Reason.CONFIG_INVALID
        assert message in refused.message
    assert order_count(pg) == before


def test_sample_cuts_long_values(pg: localpostgres.PostgresServer) -> None:
    localpostgres.execute(
        pg,
        "create table public.documents (body text);"
        "insert into public.documents select repeat('z', 200000) from generate_series(1, 3);"
        "grant select on public.documents to app",
        "orders",
    )
    rows = CALLS.browse(make_request(pg), lambda b: b.sample("public", "documents", 3))
    assert rows.truncated
    assert [row[0] for row in rows.rows] == ["z" * MAX_VALUE_BYTES] * 3


def test_tables_lists_readable_tables_and_system_tables_only_when_asked(
    pg: localpostgres.PostgresServer,
) -> None:
    async def listed(browser: SqlBrowser) -> tuple[list[TableInfo], list[TableInfo]]:
        return await browser.tables(False), await browser.tables(True)

    user, everything = CALLS.browse(make_request(pg), listed)
    assert TableInfo("public", "orders", "table") in user
    assert all(t.name != "secrets" for t in user)  # no privilege on it
    assert all(t.schema != "pg_catalog" for t in user)
    assert TableInfo("pg_catalog", "pg_class", "table") in everything


def test_columns_sample_and_query_name_each_columns_type_alike(
    pg: localpostgres.PostgresServer,
) -> None:
    localpostgres.execute(
        pg,
        "create table public.typed (id int primary key, name varchar(20) not null,"
        " amount numeric(10, 2));"
        "insert into public.typed values (1, 'one', 2.50);"
        "grant select on public.typed to app",
        "orders",
    )

    async def browsed(browser: SqlBrowser) -> tuple[list[ColumnInfo], RowSet, RowSet]:
        return (
            await browser.columns("public", "typed"),
            await browser.sample("public", "typed", 5),
            await browser.query("select amount, id::bigint as big, now() as at from typed", 5),
        )

    columns, sample, queried = CALLS.browse(make_request(pg), browsed)
    assert columns == [
        ColumnInfo("id", "integer", nullable=False, primary_key=True),
        ColumnInfo("name", "character varying(20)", nullable=False, primary_key=False),
        ColumnInfo("amount", "numeric(10,2)", nullable=True, primary_key=False),
    ]
    assert sample.types == tuple(c.type for c in columns)
    assert sample.rows == ((1, "one", "2.50"),)
    assert queried.types == ("numeric(10,2)", "bigint", "timestamp with time zone")


def test_columns_of_an_unknown_table_is_resource_not_found(
    pg: localpostgres.PostgresServer,
) -> None:
    with pytest.raises(DriverError) as info:
        CALLS.browse(make_request(pg), lambda b: b.columns("public", "nope"))
    assert info.value.code == Reason.RESOURCE_NOT_FOUND


def test_query_check_with_a_long_value_passes_and_says_it_was_cut(
    pg: localpostgres.PostgresServer,
) -> None:
    outcome = run(verify(make_request(pg, checks=(LONG_VALUE_CHECK,))))
    assert_passed_with_a_value_cut(outcome.checks[0])


def test_table_checks(pg: localpostgres.PostgresServer) -> None:
    checks = (table("orders"), table("public.orders"), table("public.secrets"), table("missing"))
    outcome = run(verify(make_request(pg, checks=checks)))
    assert [(c.target, c.result, c.code) for c in outcome.checks] == [
        ("orders", "Succeeded", Reason.VERIFIED),
        ("public.orders", "Succeeded", Reason.VERIFIED),
        ("public.secrets", "Failed", Reason.PERMISSION_DENIED),
        ("missing", "Failed", Reason.RESOURCE_NOT_FOUND),
    ]
    assert outcome.code == Reason.PERMISSION_DENIED


def test_table_check_on_missing_table_is_resource_not_found(
    pg: localpostgres.PostgresServer,
) -> None:
    checks = (table("public.nope"), table("noschema.orders"))
    outcome = run(verify(make_request(pg, checks=checks)))
    assert (outcome.result, outcome.code) == ("Failed", Reason.RESOURCE_NOT_FOUND)
    assert [c.code for c in outcome.checks] == [Reason.RESOURCE_NOT_FOUND] * 2


def test_table_check_quotes_the_name(pg: localpostgres.PostgresServer) -> None:
    outcome = run(verify(make_request(pg, checks=(table('orders"; drop table orders; --'),))))
    assert outcome.checks[0].code == Reason.RESOURCE_NOT_FOUND
    assert order_count(pg) >= 3


def test_other_check_types_are_not_supported(pg: localpostgres.PostgresServer) -> None:
    checks = (
        CheckSpec(type="listFiles", path="/data"),
        CheckSpec(type="http", http=HttpRequestSpec(path="/health")),
    )
    outcome = run(verify(make_request(pg, checks=checks)))
    assert [(c.result, c.code, c.message) for c in outcome.checks] == [
        ("Failed", Reason.CONFIG_INVALID, f"check type {t} is not supported by the postgres driver")
        for t in ("listFiles", "http")
    ]
    assert outcome.code == Reason.CONFIG_INVALID


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pg(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[localpostgres.PostgresServer, str]]:
    """A second server that serves TLS; yields it and the PEM of its CA."""
    with stopping(localpostgres.start_postgres(tmp_path_factory.mktemp("postgres-tls"))) as server:
        ca = CertificateAuthority.create("patchbay test CA")
        localpostgres.enable_ssl(server, *ca.leaf_text(SERVER_NAME))
        localpostgres.execute(server, f"create role app login password '{APP_PASSWORD}'")
        localpostgres.execute(server, "create database orders owner app")
        yield server, ca.cert_text


def test_verify_full_with_the_right_ca_and_name_verifies(
    tls_pg: tuple[localpostgres.PostgresServer, str], private_tmp: Path
) -> None:
    server, ca = tls_pg
    client = CertificateAuthority.create("client CA").leaf_text(
        "client", server=False
    )  # sent only if asked; files still written
    tls = TlsMaterial(
        ca_pem=ca, client_cert_pem=client[0], client_key_pem=client[1], server_name=SERVER_NAME
    )
    outcome = run(verify(make_request(server, sslmode="verify-full", tls=tls)))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert list(private_tmp.iterdir()) == []


def test_verify_full_with_another_ca_is_tls_error(
    tls_pg: tuple[localpostgres.PostgresServer, str], private_tmp: Path
) -> None:
    server, _ = tls_pg
    tls = TlsMaterial(
        ca_pem=CertificateAuthority.create("someone else").cert_text, server_name=SERVER_NAME
    )
    error = verify_error(make_request(server, sslmode="verify-full", tls=tls))
    assert error.code == Reason.TLS_ERROR
    assert "certificate verify failed" in error.message
    assert list(private_tmp.iterdir()) == []


def test_verify_full_with_a_wrong_name_is_tls_error(
    tls_pg: tuple[localpostgres.PostgresServer, str],
) -> None:
    server, ca = tls_pg
    tls = TlsMaterial(ca_pem=ca, server_name="other.patchbay.test")
    error = verify_error(make_request(server, sslmode="verify-full", tls=tls))
    assert error.code == Reason.TLS_ERROR
    assert "other.patchbay.test" in error.message


def test_verify_full_without_a_ca_uses_system_roots(
    tls_pg: tuple[localpostgres.PostgresServer, str],
) -> None:
    server, _ = tls_pg
    error = verify_error(make_request(server, sslmode="verify-full"))
    assert error.code == Reason.TLS_ERROR


def test_sslmode_require_uses_tls_when_served(
    tls_pg: tuple[localpostgres.PostgresServer, str],
) -> None:
    server, _ = tls_pg
    outcome = run(verify(make_request(server, sslmode="require")))
    assert outcome.code == Reason.VERIFIED
