"""The shared runner: timeout, classification and scrubbing around every driver."""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core import verification
from patchbay.core.config import ResolvedConfig
from patchbay.core.credentials import ResolvedCredentials
from patchbay.core.verification import REDACTED, run_verification, scrub
from patchbay.drivers.base import (
    CheckOutcome,
    DriverError,
    Egress,
    IPAddress,
    VerifyOutcome,
    VerifyRequest,
)

SECRET = "pa55-w0rd-XYZ"
REQUEST = VerifyRequest(config={"host": "db"}, secrets={"password": SECRET, "username": "app"})


class NoEgress:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        raise AssertionError("the fake drivers never resolve")


EGRESS: Egress = NoEgress()


class SleepyDriver:
    name = "sleepy"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        await asyncio.sleep(10)
        return VerifyOutcome("Succeeded", Reason.VERIFIED)


class FailingDriver:
    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        raise self.error


class LeakyDriver:
    name = "leaky"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        password = str(request.secrets["password"])
        return VerifyOutcome(
            "Failed",
            Reason.PERMISSION_DENIED,
            f"login as app with {password} refused",
            server_version=f"PostgreSQL 16 ({password})",
            checks=(
                CheckOutcome(
                    "query",
                    f"SELECT '{password}'",
                    "Failed",
                    Reason.PERMISSION_DENIED,
                    f"permission denied for {password}",
                ),
            ),
        )


class CountingLimiter:
    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    async def __aenter__(self) -> CountingLimiter:
        self.entered += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.exited += 1


def _run(driver: object, timeout: float = 5.0) -> VerifyOutcome:
    outcome, elapsed = asyncio.run(
        run_verification(driver, REQUEST, egress=EGRESS, timeout_seconds=timeout)  # type: ignore[arg-type]
    )
    assert elapsed >= 0
    return outcome


def test_scrub_replaces_every_secret_value() -> None:
    text = "user app-admin with password hunter22 and again hunter22"

    assert scrub(text, ["hunter22", "app-admin"]) == (
        f"user {REDACTED} with password {REDACTED} and again {REDACTED}"
    )


def test_scrub_replaces_the_longest_value_first_so_overlaps_leave_nothing() -> None:
    text = "token abcd1234efgh"

    scrubbed = scrub(text, ["abcd", "abcd1234efgh"])

    assert scrubbed == f"token {REDACTED}"
    assert "efgh" not in scrubbed


def test_scrub_ignores_values_shorter_than_four_characters() -> None:
    text = "the app is on db"

    assert scrub(text, ["app", "db", "", "on"]) == text
    assert scrub("key abcd", ["abcd"]) == f"key {REDACTED}"


def test_driver_running_past_the_timeout_fails_with_code_timeout() -> None:
    outcome = _run(SleepyDriver(), timeout=0.05)

    assert outcome.result == "Failed"
    assert outcome.code == Reason.TIMEOUT
    assert outcome.retryable is True


def test_driver_error_keeps_its_code_and_retryable_flag() -> None:
    auth = _run(FailingDriver(DriverError(Reason.AUTHENTICATION_FAILED, "bad password")))
    assert (auth.result, auth.code, auth.retryable) == ("Failed", "AuthenticationFailed", False)
    assert auth.message == "bad password"

    unreachable = _run(FailingDriver(DriverError(Reason.HOST_UNREACHABLE, "refused")))
    assert (unreachable.code, unreachable.retryable) == (Reason.HOST_UNREACHABLE, True)

    forced = _run(FailingDriver(DriverError(Reason.TLS_ERROR, "bad cert", retryable=False)))
    assert (forced.code, forced.retryable) == (Reason.TLS_ERROR, False)


def test_driver_error_passes_on_the_servers_retry_after() -> None:
    error = DriverError(Reason.RATE_LIMITED, "slow down")
    error.retry_after = 30.0

    outcome = _run(FailingDriver(error))

    assert outcome.code == Reason.RATE_LIMITED
    assert outcome.retry_after == 30.0


def test_unexpected_exception_is_unknown_provider_error() -> None:
    outcome = _run(FailingDriver(KeyError("server_version")))

    assert outcome.result == "Unknown"
    assert outcome.code == Reason.PROVIDER_ERROR
    assert "KeyError" in outcome.message


def test_secret_in_a_driver_message_is_redacted_everywhere() -> None:
    outcome = _run(LeakyDriver())

    assert SECRET not in outcome.message
    assert REDACTED in outcome.message
    assert outcome.server_version == f"PostgreSQL 16 ({REDACTED})"
    check = outcome.checks[0]
    assert SECRET not in check.message
    assert SECRET not in check.target
    assert check.message == f"permission denied for {REDACTED}"
    assert outcome.code == Reason.PERMISSION_DENIED


def test_secret_in_a_driver_error_is_redacted() -> None:
    outcome = _run(FailingDriver(DriverError(Reason.AUTHENTICATION_FAILED, f"bad {SECRET}")))

    assert outcome.message == f"bad {REDACTED}"


def test_secret_in_an_unexpected_exception_is_redacted() -> None:
    outcome = _run(FailingDriver(RuntimeError(f"dsn password={SECRET} rejected")))

    assert SECRET not in outcome.message
    assert outcome.message == f"RuntimeError: dsn password={REDACTED} rejected"


def test_verification_runs_inside_the_connectors_rate_limit() -> None:
    limiter = CountingLimiter()

    outcome, _ = asyncio.run(
        run_verification(
            FailingDriver(DriverError(Reason.HOST_UNREACHABLE, "refused")),
            REQUEST,
            egress=EGRESS,
            timeout_seconds=1.0,
            limiter=limiter,
        )
    )

    assert outcome.code == Reason.HOST_UNREACHABLE
    assert (limiter.entered, limiter.exited) == (1, 1)


class StubbornDriver:
    """Ignores cancellation for a long while, as a driver stuck in cleanup would."""

    name = "stubborn"

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(0.5))
        self.finished.set()
        return VerifyOutcome("Succeeded", Reason.VERIFIED)


def test_driver_ignoring_its_timeout_frees_the_caller_after_a_short_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verification, "CANCEL_GRACE_SECONDS", 0.05)
    driver = StubbornDriver()

    async def scenario() -> tuple[VerifyOutcome, bool, bool]:
        slot = asyncio.Semaphore(1)
        outcome, _ = await run_verification(
            driver, REQUEST, egress=EGRESS, timeout_seconds=0.05, limiter=slot
        )
        freed = not slot.locked()
        still_running = not driver.finished.is_set()
        await driver.finished.wait()  # let it end before the loop closes
        return outcome, freed, still_running

    outcome, freed, still_running = asyncio.run(scenario())
    assert (outcome.result, outcome.code) == ("Failed", Reason.TIMEOUT)
    assert freed
    assert still_running


def test_a_connections_own_request_still_proves_credentials_when_its_connector_does() -> None:
    connector = ConnectorSpec.model_validate(
        {
            "driver": "http",
            "auth": {"type": "bearer"},
            "verification": {
                "http": {"path": "/", "credentialsRequired": True},
                "allowConnectionRequest": True,
            },
        }
    )
    connection = ConnectionSpec.model_validate(
        {
            "connectorRef": {"name": "http-api"},
            "verification": {
                "http": {"path": "/v2/me", "credential": {"in": "query", "name": "key"}}
            },
            "binding": {"accessToken": False},
        }
    )

    request = verification.build_verify_request(
        connector,
        connection,
        ResolvedConfig(values={"baseUrl": "https://a.test"}, secret_variables=()),
        ResolvedCredentials(values={"token": "t0ken"}, configured={"token": True}),
        10.0,
    )

    assert request.http is not None
    assert (request.http.path, request.http.credentials_required) == ("/v2/me", True)
    assert request.credential_placement is not None
    assert (request.credential_placement.in_, request.credential_placement.name) == (
        "query",
        "key",
    )
    assert request.keep_access_token is False
