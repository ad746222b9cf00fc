"""A connector's rate limit hands out its budget and says when the next call may go;
scoped, it keeps one bucket per key and forgets only the ones that refilled."""

from __future__ import annotations

import pytest

from patchbay.core.ratelimit import KeyedBuckets, TokenBucket


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


MINUTE = (1, 60.0)  # one call a minute


def test_each_key_has_its_own_budget() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(clock=Clock())
    assert buckets.take("seller-a", MINUTE) == 0.0
    assert buckets.take("seller-a", MINUTE) == pytest.approx(60.0)
    assert buckets.take("seller-b", MINUTE) == 0.0


def test_a_new_budget_for_a_key_starts_a_new_bucket() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(clock=Clock())
    buckets.take("seller-a", MINUTE)
    assert buckets.take("seller-a", (2, 60.0)) == 0.0


def test_a_bucket_still_refilling_is_kept_however_many_keys_come() -> None:
    clock = Clock()
    buckets: KeyedBuckets[str] = KeyedBuckets(bound=2, clock=clock)
    buckets.take("seller-a", MINUTE)
    for i in range(50):
        clock.now += 1.0
        buckets.take(f"other-{i}", MINUTE)
    assert buckets.take("seller-a", MINUTE) == pytest.approx(10.0)


def test_refilled_buckets_are_dropped_so_the_keys_stay_bounded() -> None:
    clock = Clock()
    buckets: KeyedBuckets[int] = KeyedBuckets(bound=4, clock=clock)
    for key in range(10_000):
        buckets.take(key, MINUTE)
        clock.now += 60.0
    assert len(buckets) <= 4
    assert buckets.take(0, MINUTE) == 0.0  # a dropped bucket comes back full


def test_discarded_buckets_start_over() -> None:
    buckets: KeyedBuckets[tuple[str, str]] = KeyedBuckets(clock=Clock())
    buckets.take(("amazon-sp", "seller-a"), MINUTE)
    buckets.take(("shopify", "store-a"), MINUTE)
    buckets.discard(lambda key: key[0] == "amazon-sp")
    assert buckets.take(("amazon-sp", "seller-a"), MINUTE) == 0.0
    assert buckets.take(("shopify", "store-a"), MINUTE) == pytest.approx(60.0)
