"""The one check runner every driver uses: order, time, targets and classification."""

from __future__ import annotations

import asyncio

import pytest

from patchbay.api.connector import CheckSpec, CheckType, HttpRequestSpec
from patchbay.api.reasons import Reason
from patchbay.drivers.base import Deadline, DriverError, VerifyRequest
from patchbay.drivers.checks import (
    CheckFunction,
    CheckResults,
    SessionLost,
    check_subject,
    check_target,
    run_checks,
)

QUERY = CheckSpec(type="query", sql="select 1")
TABLE = CheckSpec(type="table", table="sales.orders")


def _passing(message: str = "ok") -> CheckFunction:
    async def run(check: CheckSpec) -> str:
        return message

    return run


def _failing(error: DriverError) -> CheckFunction:
    async def run(check: CheckSpec) -> str:
        raise error

    return run


def _run(
    checks: tuple[CheckSpec, ...],
    functions: dict[CheckType, CheckFunction],
    deadline: Deadline | None = None,
    *,
    connection_checks: int = 0,
) -> CheckResults:
    request = VerifyRequest(
        config={}, secrets={}, checks=checks, connection_checks=connection_checks
    )
    return asyncio.run(run_checks("fake", request, functions, deadline or Deadline(10)))


@pytest.mark.parametrize(
    ("code", "result"),
    [
        (Reason.TIMEOUT, "Unknown"),
        (Reason.HOST_UNREACHABLE, "Unknown"),
        (Reason.RATE_LIMITED, "Unknown"),
        (Reason.PROVIDER_ERROR, "Failed"),  # a server error is an answer: Failed
        (Reason.AUTHENTICATION_FAILED, "Failed"),
        (Reason.PERMISSION_DENIED, "Failed"),
        (Reason.RESOURCE_NOT_FOUND, "Failed"),
        (Reason.CONFIG_INVALID, "Failed"),
        (Reason.PROTOCOL_ERROR, "Failed"),
        (Reason.TLS_ERROR, "Failed"),
    ],
)
def test_a_failed_check_is_unknown_only_when_no_answer_could_be_had(
    code: Reason, result: str
) -> None:
    results = _run((QUERY,), {"query": _failing(DriverError(code, "went wrong"))})

    assert [(c.result, c.code, c.message) for c in results.checks] == [(result, code, "went wrong")]
    outcome = results.outcome(server_version="v1", latency_ms=3)
    assert (outcome.result, outcome.code) == (result, code)
    assert outcome.message == "check query select 1: went wrong"


def test_server_error_of_a_check_is_failed_and_retryable() -> None:
    error = DriverError(Reason.PROVIDER_ERROR, "HTTP 502 from server")

    outcome = _run((QUERY,), {"query": _failing(error)}).outcome(
        server_version=None, latency_ms=None
    )

    assert (outcome.result, outcome.code, outcome.retryable) == (
        "Failed",
        Reason.PROVIDER_ERROR,
        True,
    )


def test_checks_run_in_order_and_all_passing_is_verified() -> None:
    ran: list[str] = []

    def recording(name: str) -> CheckFunction:
        async def run(check: CheckSpec) -> str:
            ran.append(name)
            return f"{name} fine"

        return run

    results = _run((QUERY, TABLE, QUERY), {"query": recording("q"), "table": recording("t")})

    assert ran == ["q", "t", "q"]
    assert [c.message for c in results.checks] == ["q fine", "t fine", "q fine"]
    outcome = results.outcome(server_version="v1", latency_ms=5)
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert outcome.message == "connected and authenticated; 3 check(s) passed"
    assert (outcome.server_version, outcome.latency_ms) == ("v1", 5)


def test_check_type_the_driver_lacks_is_config_invalid_naming_the_driver() -> None:
    results = _run((TABLE, QUERY), {"query": _passing()})

    assert [(c.result, c.code, c.message) for c in results.checks] == [
        ("Failed", Reason.CONFIG_INVALID, "check type table is not supported by the fake driver"),
        ("Succeeded", Reason.VERIFIED, "ok"),
    ]


def test_the_first_check_that_did_not_succeed_decides_the_outcome() -> None:
    results = _run(
        (QUERY, TABLE),
        {
            "query": _failing(DriverError(Reason.TIMEOUT, "slow")),
            "table": _failing(DriverError(Reason.PERMISSION_DENIED, "no")),
        },
    )

    outcome = results.outcome(server_version=None, latency_ms=None)
    assert (outcome.result, outcome.code, outcome.retryable) == (
        "Unknown",
        Reason.TIMEOUT,
        True,
    )


def test_an_errors_own_retryable_flag_and_retry_after_reach_the_outcome() -> None:
    limited = DriverError(Reason.RATE_LIMITED, "slow down")
    limited.retry_after = 30.0
    forced = DriverError(Reason.TLS_ERROR, "bad cert", retryable=False)

    limited_outcome = _run((QUERY,), {"query": _failing(limited)}).outcome(
        server_version=None, latency_ms=None
    )
    forced_outcome = _run((QUERY,), {"query": _failing(forced)}).outcome(
        server_version=None, latency_ms=None
    )

    assert (limited_outcome.code, limited_outcome.retry_after) == (Reason.RATE_LIMITED, 30.0)
    assert (forced_outcome.code, forced_outcome.retryable) == (Reason.TLS_ERROR, False)


def test_a_lost_session_is_classified_and_the_checks_after_it_are_not_run() -> None:
    ran: list[str] = []

    async def counted(check: CheckSpec) -> str:
        ran.append(check.type)
        return "ok"

    lost = SessionLost(Reason.TIMEOUT, "the server did not answer in time")
    results = _run((TABLE, QUERY, TABLE), {"query": _failing(lost), "table": counted})

    assert ran == ["table"]
    assert [(c.result, c.code) for c in results.checks] == [
        ("Succeeded", Reason.VERIFIED),
        ("Unknown", Reason.TIMEOUT),
        ("Unknown", Reason.TIMEOUT),
    ]
    assert results.checks[2].message == "not run: check query select 1 ended the session"


def test_checks_left_when_the_time_is_up_are_not_run() -> None:
    ran: list[str] = []

    async def counted(check: CheckSpec) -> str:
        ran.append(check.type)
        return "ok"

    results = _run((QUERY, TABLE), {"query": counted, "table": counted}, Deadline(0))

    assert ran == []
    assert [(c.result, c.code, c.message) for c in results.checks] == [
        ("Unknown", Reason.TIMEOUT, "not run: no time was left")
    ] * 2
    outcome = results.outcome(server_version=None, latency_ms=None)
    assert (outcome.result, outcome.code) == ("Unknown", Reason.TIMEOUT)


def test_unclassified_exception_of_a_check_is_not_hidden() -> None:
    async def broken(check: CheckSpec) -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        _run((QUERY,), {"query": broken})


@pytest.mark.parametrize(
    ("check", "target"),
    [
        (CheckSpec(type="query", sql="select " + "x" * 300), "select " + "x" * 193),
        (TABLE, "sales.orders"),
        (CheckSpec(type="listFiles", path="/incoming"), "/incoming"),
        (
            CheckSpec(type="http", http=HttpRequestSpec(method="HEAD", path="/v1/me")),
            "HEAD /v1/me",
        ),
    ],
)
def test_each_check_type_names_its_target(check: CheckSpec, target: str) -> None:
    assert check_target(check) == target


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (CheckSpec.model_construct(type="query", sql="  "), "a query check needs sql"),
        (CheckSpec.model_construct(type="table"), "a table check needs table"),
        (CheckSpec.model_construct(type="readObject"), "a readObject check needs path"),
    ],
)
def test_check_without_its_subject_is_config_invalid(check: CheckSpec, message: str) -> None:
    with pytest.raises(DriverError) as info:
        check_subject(check)
    assert (info.value.code, info.value.message) == (Reason.CONFIG_INVALID, message)


def test_a_failed_check_the_connection_defines_says_its_code_not_the_servers_words() -> None:
    leak = DriverError(
        Reason.PROVIDER_ERROR,
        'invalid input syntax for type integer: "the-salary-table-secret"',
        server_code="22P02",
    )
    own = CheckSpec(type="query", sql="select cast((select secret from t) as int)")
    results = _run((QUERY, own), {"query": _failing(leak)}, connection_checks=1)

    connector_check, connection_check = results.checks
    assert "the-salary-table-secret" in connector_check.message  # the connector's: shown
    assert "the-salary-table-secret" not in connection_check.message
    assert "22P02" in connection_check.message
    assert connection_check.code == Reason.PROVIDER_ERROR

    alone = _run((own,), {"query": _failing(leak)}, connection_checks=1)
    outcome = alone.outcome(server_version=None, latency_ms=None)
    assert "the-salary-table-secret" not in outcome.message
