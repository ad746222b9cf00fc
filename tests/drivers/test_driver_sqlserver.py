"""The sqlserver driver against loopback listeners that are not SQL Server.

No SQL Server can be installed here (it is in neither Debian nor PyPI), so these tests
cover what needs none: unreachable and silent servers, peers that do not speak TDS, a
fake server's answer to the driver's first (PRELOGIN) message, the egress policy and
secrets; and, against a fake that keeps SQL Server's side of TDS (tds_fake), what the
driver sends for checks: which SQL reaches the server, the limits it sets, and the
attention it sends when time is up. docs/connectors.md says what a test against a real
server needs.
Everything connects to 127.0.0.1 (or 127.0.0.2 for the egress test) only.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import uuid
from dataclasses import replace

import pytest
from aiohttp import web

import http_server
from driver_calls import (
    OPEN_POLICY,
    DriverCalls,
    assert_error_keeps_no_secret,
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
    DriverError,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
)
from patchbay.drivers.sqlserver import TEXT_SIZE, SqlServerDriver
from tds_fake import Column, FakeSqlServer, ResultSet

DRIVER = SqlServerDriver()
CALLS = DriverCalls(DRIVER)
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
    setup, check, tran_count, cleanup = server.batches[-4:]
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
    server = FakeSqlServer(stalled={"select count(*) from everything"})
    outcome = run(_checked(server, "select count(*) from everything", server_limit=1.0))
    assert outcome.code == Reason.TIMEOUT
    assert server.attentions >= 1


def test_query_check_out_of_time_is_unknown_and_later_checks_do_not_run() -> None:
    server = FakeSqlServer(
        stalled={"select count(*) from everything"}, results={"select 1 as one": ONE_ROW}
    )
    outcome = run(
        _checked(server, "select count(*) from everything", "select 1 as one", server_limit=1.0)
    )
    assert (outcome.result, outcome.code) == ("Unknown", Reason.TIMEOUT)
    assert [(c.result, c.code) for c in outcome.checks] == [("Unknown", Reason.TIMEOUT)] * 2
    assert outcome.checks[1].message.startswith("not run: ")
    assert "select 1 as one" not in server.batches


def test_query_check_cut_off_by_the_callers_timeout_hangs_up_on_the_server() -> None:
    server = FakeSqlServer(stalled={"select count(*) from everything"})

    async def scenario() -> VerifyOutcome:
        outcome = await _checked(server, "select count(*) from everything", caller_limit=1.0)
        await asyncio.wait_for(server.closed.wait(), 10)
        return outcome

    outcome = run(scenario())
    assert outcome.code == Reason.TIMEOUT
    assert server.closed.is_set()
