"""When an access token kept in a binding is renewed, and when it is still offered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from patchbay.core.tokens import token_renewal, unexpired_access_token
from patchbay.drivers.base import ACCESS_TOKEN_KEY, EXPIRES_AT_FORMAT, EXPIRES_AT_KEY

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def _expiring_in(delta: timedelta) -> dict[str, str]:
    return {ACCESS_TOKEN_KEY: "at-1", EXPIRES_AT_KEY: (NOW + delta).strftime(EXPIRES_AT_FORMAT)}


def test_an_hour_long_token_is_renewed_five_minutes_before_it_expires() -> None:
    renewal = token_renewal(_expiring_in(timedelta(hours=1)), finished=NOW)

    assert renewal == NOW + timedelta(minutes=55)


def test_a_ten_minute_token_is_renewed_a_fifth_of_its_life_early() -> None:
    renewal = token_renewal(_expiring_in(timedelta(minutes=10)), finished=NOW)

    assert renewal == NOW + timedelta(minutes=8)


def test_a_token_of_seconds_is_renewed_no_sooner_than_the_shortest_interval() -> None:
    renewal = token_renewal(_expiring_in(timedelta(seconds=5)), finished=NOW)

    assert renewal == NOW + timedelta(minutes=1)


def test_a_token_without_an_expiry_follows_the_regular_schedule() -> None:
    assert token_renewal({ACCESS_TOKEN_KEY: "at-1"}, finished=NOW) is None
    assert token_renewal({ACCESS_TOKEN_KEY: "at-1", EXPIRES_AT_KEY: "soon"}, finished=NOW) is None


def test_a_binding_token_is_offered_again_only_while_it_is_valid() -> None:
    valid = _expiring_in(timedelta(minutes=3))
    expired = _expiring_in(timedelta(seconds=-1))

    assert unexpired_access_token({**valid, "clientId": "x"}, NOW) == valid
    assert unexpired_access_token(expired, NOW) == {}
    assert unexpired_access_token({ACCESS_TOKEN_KEY: "at-1"}, NOW) == {}
