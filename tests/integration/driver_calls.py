"""What the driver tests share: calling a driver as the operator does, and the checks they ask.

Drivers are called directly, without Kubernetes, under an egress policy that allows every
address unless a test passes a policy of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from patchbay.api.connector import CheckSpec
from patchbay.drivers.base import Driver, DriverError, VerifyOutcome, VerifyRequest
from patchbay.egress import EgressPolicy

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
