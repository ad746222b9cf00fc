"""One runner for every driver's capability checks.

A driver supplies, for each check type it supports, a function that runs one check
over its logged-in session and returns what it found, as a short message. The function
raises ``DriverError`` for a classified failure of that check, and ``SessionLost`` when
the session cannot run another check. Everything else is the runner's, the same for
every driver: it runs the checks in order while time is left, names each check's
target, answers check types the driver does not support, and classifies each failure.

How a check's failure is classified (docs/reasons.md says the same to users):

- ``Unknown`` when no answer could be had: the system did not answer in time
  (``Timeout``), could not be reached (``HostUnreachable``) or declined to answer for now
  (``RateLimited``). Such a check says nothing about the capability it tests.
- ``Failed`` for every other failure, with its reason: the system said no
  (``AuthenticationFailed``, ``PermissionDenied``, ``ResourceNotFound``), the check cannot
  run as written (``ConfigInvalid``), the server did not speak its protocol
  (``ProtocolError``, ``TLSError``), or the server failed at its end, such as an HTTP 5xx
  or a database's internal error (``ProviderError``): the server answered, and the answer
  was a failure.
- Whether a failure is worth retrying is the error's own flag: every reason but those
  that need a change of inputs (``NOT_RETRYABLE``), so a server error is retryable.
- A check that loses the session is classified the same way; the checks after it are not
  run and are ``Unknown``, with the reason that ended the session. So are the checks left
  when the time is up.

The verification's result is that of the first check that did not succeed, its code,
retryability and Retry-After with it; ``Succeeded`` when every check did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from patchbay.api.connector import CheckSpec, CheckType
from patchbay.api.reasons import Reason
from patchbay.drivers.base import (
    CheckOutcome,
    Deadline,
    DriverError,
    ResultKind,
    VerifyOutcome,
    VerifyRequest,
)

# A check that failed for one of these reasons learnt nothing definite about the
# capability it tests, so its result is Unknown rather than Failed.
INCONCLUSIVE = frozenset({Reason.TIMEOUT, Reason.RATE_LIMITED, Reason.HOST_UNREACHABLE})
TARGET_MAX = 200

# Runs one check over a driver's session; returns the message of a success.
CheckFunction = Callable[[CheckSpec], Awaitable[str]]


class SessionLost(DriverError):
    """A check's failure after which nothing more can be checked over the session."""

    @classmethod
    def of(cls, error: DriverError) -> SessionLost:
        lost = cls(error.code, error.message, retryable=error.retryable)
        lost.retry_after = error.retry_after
        return lost


def check_result(code: Reason) -> ResultKind:
    """The result of a check that failed with ``code``: see the module's rule."""
    return "Unknown" if code in INCONCLUSIVE else "Failed"


def check_target(check: CheckSpec) -> str:
    """What a check looks at, as shown in status: SQL, table, path or request."""
    if check.type == "http":
        target = f"{check.http.method} {check.http.path}" if check.http else ""
    elif check.type == "query":
        target = check.sql or ""
    else:
        target = (check.table if check.type == "table" else check.path) or ""
    return target[:TARGET_MAX]


_SUBJECT_FIELDS: Mapping[CheckType, str] = {"query": "sql", "table": "table"}


def check_subject(check: CheckSpec) -> str:
    """The SQL of a query check, the table of a table check, the path of a file check;
    ConfigInvalid when it is missing (the CRD requires it, but drivers are called directly
    too)."""
    field = _SUBJECT_FIELDS.get(check.type, "path")
    value = getattr(check, field)
    if not isinstance(value, str) or not value.strip():
        raise DriverError(Reason.CONFIG_INVALID, f"a {check.type} check needs {field}")
    return value


def ok_message(cut_to: int | None = None) -> str:
    """The message of a passed check; ``cut_to`` says that the row it read had a value cut
    to so many bytes."""
    return "ok" if cut_to is None else f"ok; a value of the result was cut to {cut_to} bytes"


@dataclass(frozen=True)
class _Done:
    outcome: CheckOutcome
    error: DriverError | None = None


@dataclass(frozen=True)
class CheckResults:
    """The checks' outcomes in order, and the error of the first that did not succeed."""

    checks: tuple[CheckOutcome, ...]
    failure: DriverError | None = None

    def outcome(self, *, server_version: str | None, latency_ms: int | None) -> VerifyOutcome:
        """The verification's outcome after a successful login."""
        checks = self.checks
        first = next((c for c in checks if c.result != "Succeeded"), None)
        if first is None or self.failure is None:
            return VerifyOutcome(
                result="Succeeded",
                code=Reason.VERIFIED,
                message="connected and authenticated"
                + (f"; {len(checks)} check(s) passed" if checks else ""),
                server_version=server_version,
                latency_ms=latency_ms,
                checks=checks,
            )
        return VerifyOutcome(
            result=first.result,
            code=first.code,
            message=f"check {first.type} {first.target}: {first.message}",
            retryable=self.failure.retryable,
            server_version=server_version,
            latency_ms=latency_ms,
            checks=checks,
            retry_after=self.failure.retry_after,
        )


def withheld(error: DriverError) -> str:
    """What a Connection's own failed check says: the code, never the server's words,
    which can quote data the Connection's author may not read."""
    code = f" (server code {error.server_code})" if error.server_code else ""
    return (
        f"the check failed{code}; the server's message is not shown for a check the "
        "Connection defines"
    )


async def _run_one(
    driver: str, check: CheckSpec, function: CheckFunction | None, *, own: bool
) -> _Done:
    """One check's outcome; SessionLost propagates after it is classified. ``own``: the
    Connection defined it, so a failure's message is withheld."""
    target = check_target(check)
    try:
        if function is None:
            raise DriverError(
                Reason.CONFIG_INVALID,
                f"check type {check.type} is not supported by the {driver} driver",
            )
        message = await function(check)
    except DriverError as error:
        message = withheld(error) if own else error.message
        outcome = CheckOutcome(check.type, target, check_result(error.code), error.code, message)
        return _Done(outcome, error)
    return _Done(CheckOutcome(check.type, target, "Succeeded", Reason.VERIFIED, message))


def _not_run(check: CheckSpec, why: DriverError, reason: str) -> _Done:
    outcome = CheckOutcome(
        check.type, check_target(check), "Unknown", why.code, f"not run: {reason}"
    )
    return _Done(outcome, why)


async def run_checks(
    driver: str,
    request: VerifyRequest,
    functions: Mapping[CheckType, CheckFunction],
    deadline: Deadline,
) -> CheckResults:
    """Run the request's checks in order with the driver's function for each type, while
    time is left.

    ``driver`` names the driver in the message of an unsupported check type.
    """
    done: list[_Done] = []
    ended: tuple[DriverError, str] | None = None  # what keeps the rest from running
    checks = list(request.checks)
    first_own = len(checks) - request.connection_checks
    for index, check in enumerate(checks):
        if ended is None and deadline.expired():
            ended = DriverError(Reason.TIMEOUT, "no time was left"), "no time was left"
        if ended is not None:
            done.append(_not_run(check, *ended))
            continue
        result = await _run_one(driver, check, functions.get(check.type), own=index >= first_own)
        done.append(result)
        if isinstance(result.error, SessionLost):
            ended = result.error, f"check {check.type} {result.outcome.target} ended the session"
    failure = next((d.error for d in done if d.error is not None), None)
    return CheckResults(tuple(d.outcome for d in done), failure)
