"""When to verify next: intervals, cron schedules, backoff and staleness."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.limits import (
    MAX_TIMEOUT,
    MAX_TIMEOUT_SECONDS,
    MIN_INTERVAL,
    MIN_INTERVAL_SECONDS,
    MIN_RATE_LIMIT_PERIOD,
    MIN_RATE_LIMIT_PERIOD_SECONDS,
)

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")

BACKOFF_BASE_SECONDS = 5.0


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as '1h30m' or '500ms'."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


@dataclass(frozen=True)
class Cadence:
    """Mode and period of a Connection, with the connector's defaults applied."""

    mode: str
    interval_seconds: float
    schedule: str | None = None
    # the IANA zone the schedule's times are in
    time_zone: str = "UTC"

    def _times(self, schedule: str, after: datetime) -> croniter:
        """The schedule's times after ``after``, read in its time zone (UTC when the name
        is unknown: the Connection reports ConfigInvalid, see allow_connection_options)."""
        try:
            zone: tzinfo = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = UTC
        return croniter(schedule, after.astimezone(zone))

    def next_regular(self, after: datetime) -> datetime | None:
        """The next scheduled verification; None when only changes or requests trigger one."""
        if self.mode != "Periodic":
            return None
        if self.schedule is not None:
            nxt: datetime = self._times(self.schedule, after).get_next(datetime)
            return nxt.astimezone(UTC)
        return after + timedelta(seconds=self.interval_seconds)

    def stale_at(self, last_success: datetime) -> datetime:
        """When a success shows reason Stale: two regular periods later.

        For a cron schedule that is the second scheduled time after the
        success, so uneven schedules (weekdays only) are judged by their own gaps.
        """
        if self.schedule is not None:
            it = self._times(self.schedule, last_success)
            it.get_next(datetime)
            second: datetime = it.get_next(datetime)
            return second.astimezone(UTC)
        return last_success + timedelta(seconds=2 * self.interval_seconds)


def backoff_delay(consecutive_failures: int, cap_seconds: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base·2^(n-1), capped, scaled by a factor in [0.5, 1]."""
    exponent = min(max(consecutive_failures - 1, 0), 20)
    ceiling = min(cap_seconds, BACKOFF_BASE_SECONDS * 2.0**exponent)
    return ceiling * rng.uniform(0.5, 1.0)


def next_attempt(
    cadence: Cadence,
    *,
    now: datetime,
    succeeded: bool,
    retryable: bool,
    consecutive_failures: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to verify again after an attempt that ended at ``now``.

    Success and non-retryable failures (bad credentials, invalid config) wait
    for the next regular time; transient failures back off exponentially, but
    never later than the regular time and never sooner than the server's
    Retry-After.
    """
    regular = cadence.next_regular(now)
    if succeeded or not retryable or cadence.mode == "Manual":
        return regular
    delay = backoff_delay(consecutive_failures, cadence.interval_seconds, rng or random.Random())
    retry = now + timedelta(seconds=delay)
    earliest = retry if regular is None else min(retry, regular)
    if retry_after is not None:
        earliest = max(earliest, now + timedelta(seconds=retry_after))
    return earliest


@dataclass(frozen=True)
class Bounds:
    """What a Connection may cost, after its stored values were held to the limits.

    The schema refuses values outside the limits; objects stored before a limit
    existed are clamped here, and ``notes`` says what was changed.
    """

    cadence: Cadence
    timeout_seconds: float
    rate_limit: tuple[int, float] | None
    notes: tuple[str, ...] = ()


def bounds(spec: ConnectionSpec, connector: ConnectorSpec) -> Bounds:
    notes: list[str] = []
    interval_text = spec.verification.interval or connector.verification.interval
    interval = parse_duration(interval_text)
    if interval < MIN_INTERVAL_SECONDS:
        notes.append(f"interval {interval_text} raised to the minimum {MIN_INTERVAL}")
        interval = MIN_INTERVAL_SECONDS
    timeout_text = spec.verification.timeout or connector.verification.timeout
    timeout = parse_duration(timeout_text)
    if timeout > MAX_TIMEOUT_SECONDS:
        notes.append(f"timeout {timeout_text} held to the maximum {MAX_TIMEOUT}")
        timeout = MAX_TIMEOUT_SECONDS
    rate_limit = None
    if connector.rate_limit is not None:
        per = parse_duration(connector.rate_limit.per)
        if per < MIN_RATE_LIMIT_PERIOD_SECONDS:
            notes.append(
                f"rateLimit.per {connector.rate_limit.per} raised to the minimum "
                f"{MIN_RATE_LIMIT_PERIOD}"
            )
            per = MIN_RATE_LIMIT_PERIOD_SECONDS
        rate_limit = (connector.rate_limit.requests, per)
    return Bounds(
        Cadence(
            spec.verification.mode,
            interval,
            spec.verification.schedule,
            spec.verification.time_zone or connector.time_zone,
        ),
        timeout,
        rate_limit,
        tuple(notes),
    )
