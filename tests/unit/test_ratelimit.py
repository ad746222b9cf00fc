"""A connector's rate limit hands out its budget and says when the next call may go."""

from __future__ import annotations

import pytest

from patchbay.core.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_whole_budget_is_there_at_once_then_calls_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 60.0, clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(20.0)


def test_tokens_come_back_at_the_budget_rate_and_never_beyond_it() -> None:
    clock = Clock()
    bucket = TokenBucket(2, 10.0, clock)
    bucket.take()
    bucket.take()
    clock.now = 5.0
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(5.0)
    clock.now = 1000.0
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, pytest.approx(5.0)]
