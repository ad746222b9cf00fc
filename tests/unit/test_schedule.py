"""When a Connection is verified next, how failures back off, and when success is stale."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.limits import (
    MAX_TIMEOUT_SECONDS,
    MIN_INTERVAL_SECONDS,
    MIN_RATE_LIMIT_PERIOD_SECONDS,
)
from patchbay.core.schedule import (
    BACKOFF_BASE_SECONDS,
    Cadence,
    bounds,
    next_attempt,
    parse_duration,
)

NOW = datetime(2024, 5, 1, 10, 7, 0, tzinfo=UTC)
HOURLY = Cadence("Periodic", 3600.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400.0), ("500ms", 0.5), ("30s", 30.0), ("1m30s", 90.0), ("1.5h", 5400.0)],
)
def test_go_style_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 minutes", "", "10", "1d", "5m ", "m5", "1h-30m"])
def test_non_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_interval_cadence_runs_one_interval_after() -> None:
    assert HOURLY.next_regular(NOW) == NOW + timedelta(hours=1)


def test_cron_cadence_runs_at_the_next_matching_minute() -> None:
    cadence = Cadence("Periodic", 3600.0, schedule="*/15 * * * *")

    assert cadence.next_regular(NOW) == datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    assert cadence.next_regular(datetime(2024, 5, 1, 10, 15, tzinfo=UTC)) == datetime(
        2024, 5, 1, 10, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("mode", ["Manual", "OnChange"])
def test_manual_and_on_change_have_no_regular_time(mode: str) -> None:
    assert Cadence(mode, 3600.0).next_regular(NOW) is None
    assert Cadence(mode, 3600.0, schedule="*/15 * * * *").next_regular(NOW) is None


def test_success_waits_for_the_regular_time() -> None:
    nxt = next_attempt(HOURLY, now=NOW, succeeded=True, retryable=True, consecutive_failures=0)

    assert nxt == NOW + timedelta(hours=1)


def test_non_retryable_failure_is_not_retried_sooner_than_the_regular_time() -> None:
    nxt = next_attempt(
        HOURLY,
        now=NOW,
        succeeded=False,
        retryable=False,
        consecutive_failures=1,
        rng=random.Random(1),
    )

    assert nxt == NOW + timedelta(hours=1)


def test_non_retryable_failure_in_on_change_mode_waits_for_a_change() -> None:
    nxt = next_attempt(
        Cadence("OnChange", 3600.0),
        now=NOW,
        succeeded=False,
        retryable=False,
        consecutive_failures=3,
    )

    assert nxt is None


def test_manual_mode_never_retries_on_its_own() -> None:
    nxt = next_attempt(
        Cadence("Manual", 3600.0), now=NOW, succeeded=False, retryable=True, consecutive_failures=1
    )

    assert nxt is None


@pytest.mark.parametrize("failures", [1, 2, 3, 4, 5, 6, 8, 12, 30])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_retryable_failures_back_off_exponentially_with_jitter(failures: int, seed: int) -> None:
    cap = 3600.0

    nxt = next_attempt(
        HOURLY,
        now=NOW,
        succeeded=False,
        retryable=True,
        consecutive_failures=failures,
        rng=random.Random(seed),
    )

    assert nxt is not None
    delay = (nxt - NOW).total_seconds()
    ceiling = min(cap, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
    assert 0.5 * ceiling <= delay <= ceiling


def test_backoff_grows_with_consecutive_failures() -> None:
    def delay(failures: int) -> float:
        nxt = next_attempt(
            HOURLY,
            now=NOW,
            succeeded=False,
            retryable=True,
            consecutive_failures=failures,
            rng=random.Random(7),
        )
        assert nxt is not None
        return (nxt - NOW).total_seconds()

    # same jitter factor for every call, so the ratio is exactly the growth
    assert delay(2) == pytest.approx(2 * delay(1))
    assert delay(5) == pytest.approx(16 * delay(1))


def test_retry_is_never_later_than_the_regular_time() -> None:
    cadence = Cadence("Periodic", 3600.0, schedule="*/15 * * * *")

    nxt = next_attempt(
        cadence,
        now=NOW,
        succeeded=False,
        retryable=True,
        consecutive_failures=20,
        rng=random.Random(3),
    )

    assert nxt == datetime(2024, 5, 1, 10, 15, tzinfo=UTC)


def test_retry_honours_the_servers_retry_after() -> None:
    nxt = next_attempt(
        HOURLY,
        now=NOW,
        succeeded=False,
        retryable=True,
        consecutive_failures=1,
        retry_after=120.0,
        rng=random.Random(0),
    )

    assert nxt == NOW + timedelta(seconds=120)


def test_short_retry_after_does_not_shorten_the_backoff() -> None:
    nxt = next_attempt(
        HOURLY,
        now=NOW,
        succeeded=False,
        retryable=True,
        consecutive_failures=4,
        retry_after=1.0,
        rng=random.Random(0),
    )

    assert nxt is not None
    assert (nxt - NOW).total_seconds() >= 0.5 * BACKOFF_BASE_SECONDS * 2**3


def test_interval_connection_is_stale_after_twice_the_interval() -> None:
    assert HOURLY.stale_at(NOW) == NOW + timedelta(hours=2)
    assert Cadence("Periodic", 90.0).stale_at(NOW) == NOW + timedelta(minutes=3)


def test_cron_connection_is_stale_after_two_scheduled_runs() -> None:
    midnight = datetime(2024, 5, 3, 0, 0, tzinfo=UTC)
    every_quarter = Cadence("Periodic", 3600.0, "*/15 * * * *")
    assert every_quarter.stale_at(midnight) == midnight + timedelta(minutes=30)
    assert Cadence("Periodic", 60.0, "@daily").stale_at(midnight) == midnight + timedelta(days=2)


def test_weekday_cron_connection_is_not_stale_over_the_weekend() -> None:
    cadence = Cadence("Periodic", 3600.0, "0 9 * * 1-5")
    friday_success = datetime(2024, 5, 3, 9, 0, tzinfo=UTC)
    monday_run = cadence.next_regular(friday_success)
    assert monday_run == datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    assert cadence.stale_at(friday_success) == datetime(2024, 5, 7, 9, 0, tzinfo=UTC)


def _specs(
    interval: str | None, timeout: str | None, per: str | None
) -> tuple[ConnectionSpec, ConnectorSpec]:
    connection = ConnectionSpec.model_validate(
        {
            "connectorRef": {"kind": "ClusterConnector", "name": "api"},
            "verification": {k: v for k, v in (("interval", interval), ("timeout", timeout)) if v},
        }
    )
    connector = ConnectorSpec.model_validate(
        {"driver": "http", **({"rateLimit": {"requests": 5, "per": per}} if per else {})}
    )
    return connection, connector


def test_values_within_the_limits_are_kept_without_a_note() -> None:
    held = bounds(*_specs("15m", "30s", "1m"))
    assert held.cadence.interval_seconds == 900.0
    assert held.timeout_seconds == 30.0
    assert held.rate_limit == (5, 60.0)
    assert held.notes == ()


def test_stored_values_outside_the_limits_are_clamped_and_noted() -> None:
    connection, connector = _specs("15m", "30s", "1m")
    # objects stored before the schema had these rules: bypass validation as etcd did
    stored_connection = connection.model_copy(
        update={
            "verification": connection.verification.model_copy(
                update={"interval": "1ms", "timeout": "10h"}
            )
        }
    )
    assert connector.rate_limit is not None
    stored_connector = connector.model_copy(
        update={"rate_limit": connector.rate_limit.model_copy(update={"per": "0s"})}
    )
    held = bounds(stored_connection, stored_connector)
    assert held.cadence.interval_seconds == MIN_INTERVAL_SECONDS
    assert held.timeout_seconds == MAX_TIMEOUT_SECONDS
    assert held.rate_limit == (5, MIN_RATE_LIMIT_PERIOD_SECONDS)
    assert held.notes == (
        "interval 1ms raised to the minimum 1m",
        "timeout 10h held to the maximum 2m",
        "rateLimit.per 0s raised to the minimum 1s",
    )


def test_a_cron_schedule_runs_at_its_times_in_its_time_zone() -> None:
    daily_at_two = Cadence("Periodic", 3600.0, schedule="0 2 * * *", time_zone="Europe/Berlin")

    # 02:00 in Berlin is 00:00 UTC in summer and 01:00 UTC in winter
    assert daily_at_two.next_regular(NOW) == datetime(2024, 5, 2, 0, 0, tzinfo=UTC)
    winter = datetime(2024, 12, 1, 12, 0, tzinfo=UTC)
    assert daily_at_two.next_regular(winter) == datetime(2024, 12, 2, 1, 0, tzinfo=UTC)
    assert daily_at_two.stale_at(winter) == datetime(2024, 12, 3, 1, 0, tzinfo=UTC)


def test_a_connection_time_zone_wins_over_its_connectors() -> None:
    connector = ConnectorSpec.model_validate({"driver": "http", "timeZone": "Asia/Tokyo"})
    own = ConnectionSpec.model_validate(
        {
            "connectorRef": {"name": "api"},
            "verification": {"schedule": "0 9 * * *", "timeZone": "America/New_York"},
        }
    )
    inherited = ConnectionSpec.model_validate(
        {"connectorRef": {"name": "api"}, "verification": {"schedule": "0 9 * * *"}}
    )

    assert bounds(own, connector).cadence.time_zone == "America/New_York"
    assert bounds(inherited, connector).cadence.time_zone == "Asia/Tokyo"
