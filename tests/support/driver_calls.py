"""What the driver tests share: calling a driver as the operator does, the checks they ask,
and, for the SQL drivers, the requests they make and what they prove about the read caps
and statements that outlive their time.

Drivers are called directly, without Kubernetes, under an egress policy that allows every
address unless a test passes a policy of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest

from patchbay.api.connector import CheckSpec
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy
from patchbay.core.verification import run_verification
from patchbay.drivers.base import (
    MAX_RESULT_BYTES,
    MAX_VALUE_BYTES,
    CheckOutcome,
    Driver,
    DriverError,
    JsonValue,
    RowSet,
    SqlBrowser,
    SqlBrowsing,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
)

T = TypeVar("T")
OPEN_POLICY = EgressPolicy()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class DriverCalls:
    """One driver, verified the way each test needs it: awaited, run to its outcome, or failing."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def verify(
        self, request: VerifyRequest, egress: EgressPolicy = OPEN_POLICY
    ) -> VerifyOutcome:
        return await self.driver.verify(request, egress)

    def outcome(self, request: VerifyRequest, egress: EgressPolicy = OPEN_POLICY) -> VerifyOutcome:
        """The outcome of a whole verification, run to its end in a loop of its own."""
        return run(self.verify(request, egress))

    async def failure(
        self, request: VerifyRequest, egress: EgressPolicy = OPEN_POLICY
    ) -> DriverError:
        """The error a verification that cannot complete raises."""
        with pytest.raises(DriverError) as info:
            await self.verify(request, egress)
        return info.value

    def error(self, request: VerifyRequest, egress: EgressPolicy = OPEN_POLICY) -> DriverError:
        """The error a verification that cannot complete raises, run in a loop of its own."""
        return run(self.failure(request, egress))


def query(sql: str) -> CheckSpec:
    return CheckSpec(type="query", sql=sql)


def table(name: str) -> CheckSpec:
    return CheckSpec(type="table", table=name)


def list_files(path: str) -> CheckSpec:
    return CheckSpec(type="listFiles", path=path)


def read_object(path: str) -> CheckSpec:
    return CheckSpec(type="readObject", path=path)


def assert_error_keeps_no_secret(error: DriverError, secret: str) -> None:
    """Neither the error's texts nor a library exception chained to it (whose traceback or
    connection may hold the secret) carry ``secret``."""
    for text in (str(error), error.message, repr(error)):
        assert secret not in text
    assert error.__context__ is None and error.__cause__ is None


def outcome_texts(outcome: VerifyOutcome) -> list[str]:
    """Every text of an outcome a user may read: where no secret may ever show."""
    texts = [outcome.message, repr(outcome), outcome.server_version or ""]
    return texts + [text for check in outcome.checks for text in (check.message, check.target)]


# --- SQL drivers ----------------------------------------------------------------------------


class SqlDriver(Driver, SqlBrowsing, Protocol):
    """A driver that verifies and browses a SQL database."""


class Server(Protocol):
    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class SqlRequests:
    """Requests to a local SQL server: ``config`` overrides the defaults, and the password
    is ``password`` unless a request names another."""

    defaults: Mapping[str, str | int]
    password: str

    def __call__(
        self,
        server: Server | None = None,
        *,
        checks: tuple[CheckSpec, ...] = (),
        password: str | None = None,
        tls: TlsMaterial | None = None,
        **config: str | int,
    ) -> VerifyRequest:
        values = {**self.defaults, **({"port": server.port} if server else {}), **config}
        secrets = {"password": self.password if password is None else password}
        return VerifyRequest(config=values, secrets=secrets, checks=checks, tls=tls)


class SqlDriverCalls(DriverCalls):
    """One SQL driver, verified as ``DriverCalls`` does or browsed."""

    def __init__(self, driver: SqlDriver) -> None:
        super().__init__(driver)
        self.sql_driver = driver

    def browse(self, request: VerifyRequest, use: Callable[[SqlBrowser], Awaitable[T]]) -> T:
        """What ``use`` finds in one browsing session, run in a loop of its own."""

        async def scenario() -> T:
            async with self.sql_driver.browse_sql(request, OPEN_POLICY) as browser:
                return await use(browser)

        return run(scenario())

    def rows(self, request: VerifyRequest, sql: str, max_rows: int = 10) -> RowSet:
        """The rows of the CLI's ``query`` of ``sql``."""
        return self.browse(request, lambda browser: browser.query(sql, max_rows))

    def refusal(self, request: VerifyRequest, sql: str) -> DriverError:
        """The error with which the CLI's ``query`` of ``sql`` is refused."""
        with pytest.raises(DriverError) as info:
            self.rows(request, sql)
        return info.value

    def outcome_and_still_running(
        self, request: VerifyRequest, caller_limit: float, running: Callable[[], int]
    ) -> tuple[VerifyOutcome, int]:
        """The outcome of a verification the caller gives ``caller_limit`` seconds (as the
        operator does), and how many of its statements the server still runs (``running``)
        once it has had time to stop them."""

        async def scenario() -> tuple[VerifyOutcome, int]:
            outcome, _ = await run_verification(
                self.driver, request, egress=OPEN_POLICY, timeout_seconds=caller_limit
            )
            return outcome, await asyncio.to_thread(wait_until_none, running)

        return run(scenario())


def wait_until_none(count: Callable[[], int]) -> int:
    """Polls ``count`` for ten seconds at the most until it is 0; returns the last count."""
    counted = count()
    for _ in range(100):
        if counted == 0:
            break
        time.sleep(0.1)
        counted = count()
    return counted


def outliving_its_timeout(server_limit_id: str, caller_limit_id: str) -> pytest.MarkDecorator:
    """Runs a test once with a request timeout ``server_limit`` the server enforces and once
    with the caller's ``caller_limit`` ending first; each run's id says what stops it."""
    return pytest.mark.parametrize(
        ("server_limit", "caller_limit"),
        [
            pytest.param(2.0, 60.0, id=server_limit_id),
            pytest.param(None, 2.0, id=caller_limit_id),
        ],
    )


# A query whose first values outgrow the per-value cap: 3 MB of "x", 200 kB of two-byte "é".
LONG_VALUES = "select repeat('x', 3000000) as big, repeat('é', 100000) as wide, 7 as small"
# The rows of the orders table both servers' fixtures fill with ids 1, 2 and 3.
ORDERS_UNDER_REPEATED_NAMES = "select id, 'a' as a, 'a' as a from orders order by id"
LONG_VALUE_CHECK = query("select repeat('x', 3000000)")


def long_values_cut(rows: RowSet) -> tuple[JsonValue, ...]:
    """Asserts that the values of ``LONG_VALUES`` in the first row came cut to the cap, and
    the small one whole; returns the values of the further columns of that row."""
    assert rows.columns[:3] == ("big", "wide", "small")
    assert rows.truncated
    big, wide, small, *rest = rows.rows[0]
    assert big == "x" * MAX_VALUE_BYTES
    assert isinstance(wide, str) and MAX_VALUE_BYTES - 2 <= len(wide.encode()) <= MAX_VALUE_BYTES
    assert set(wide) == {"é"}
    assert small == 7  # values within the cap keep their type
    return tuple(rest)


def assert_stopped_at_the_result_cap(rows: RowSet, asked: int) -> None:
    """Fewer than ``asked`` rows came, because the rows read filled the result's cap."""
    assert rows.truncated
    assert 0 < len(rows.rows) < asked
    assert sum(len(str(row[0])) for row in rows.rows) <= MAX_RESULT_BYTES


def assert_orders_whole(rows: RowSet) -> None:
    """``ORDERS_UNDER_REPEATED_NAMES`` came whole, its repeated column names too."""
    assert rows.columns == ("id", "a", "a")
    assert rows.rows[:3] == ((1, "a", "a"), (2, "a", "a"), (3, "a", "a"))


def assert_passed_with_a_value_cut(check: CheckOutcome) -> None:
    """A query check that read a value over the cap passed, and says it was cut."""
    assert (check.result, check.code) == ("Succeeded", Reason.VERIFIED)
    assert f"cut to {MAX_VALUE_BYTES} bytes" in check.message
