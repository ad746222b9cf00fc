"""The token buckets of a connector's rateLimit.

A worker of the work queue must never block waiting for tokens, or a throttled
connector would hold the workers every other connector needs. So the bucket
answers at once: a token now, or how long until the next one, and the caller
comes back then.

A scoped rateLimit has one bucket per Connection, credential or host, so there
may be as many buckets as Connections, and more over time as Connections come
and go. A bucket that has refilled completely is the same as a new one, so
those are dropped whenever the buckets outgrow a bound: what is kept is what
was spent within the last period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import RateLimitSpec, VariableSpec
from patchbay.core.credentials import credential_sources

K = TypeVar("K", bound=Hashable)

# Which bucket of its connector a verification takes from; () is the connector's one.
BudgetScope = tuple[str, ...]

# Buckets kept before the full ones are dropped.
KEPT_BUCKETS = 1024


class TokenBucket:
    def __init__(
        self, requests: int, per_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = (requests, per_seconds)
        self._capacity = float(requests)
        self._rate = requests / per_seconds
        self._tokens = float(requests)
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one is there."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def full(self) -> bool:
        """Refilled completely: nothing spent within the last period."""
        self._refill()
        return self._tokens >= self._capacity


class KeyedBuckets(Generic[K]):
    """A token bucket per key, made on first use; full ones are dropped beyond a bound."""

    def __init__(
        self, bound: int = KEPT_BUCKETS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bound = bound
        self._clock = clock
        self._buckets: dict[K, TokenBucket] = {}
        # The next size at which full buckets are dropped: at least twice what is kept,
        # so a map of buckets still refilling is not swept on every new key.
        self._sweep_at = bound

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: K, budget: tuple[int, float]) -> float:
        """0.0 when the key's bucket gave a token; otherwise seconds until it has one.

        Another budget for the key starts a new bucket.
        """
        bucket = self._buckets.get(key)
        if bucket is None or bucket.budget != budget:
            bucket = self._buckets[key] = TokenBucket(*budget, clock=self._clock)
        wait = bucket.take()  # before a sweep, which would drop a new, full bucket
        if len(self._buckets) > self._sweep_at:
            self._drop_full()
        return wait

    def discard(self, belongs: Callable[[K], bool]) -> None:
        """Drop the buckets of the keys that ``belongs`` picks."""
        for key in [key for key in self._buckets if belongs(key)]:
            del self._buckets[key]

    def _drop_full(self) -> None:
        self.discard(lambda key: self._buckets[key].full())
        self._sweep_at = max(self._bound, 2 * len(self._buckets))


def budget_scope(
    rate_limit: RateLimitSpec | None,
    connection: tuple[str, str],
    spec: ConnectionSpec,
    secret_variables: Sequence[VariableSpec],
    destination: str,
) -> BudgetScope:
    """Which of its connector's buckets a Connection's verification takes from.

    ``connection`` is (namespace, name), ``destination`` where the verification
    connects, as the per-destination gates key it. A credential is known by the
    Secrets and keys its values come from, never by the values: Connections that
    read the same keys share a bucket. Connections without a credential share the
    connector's one, as the system can tell them apart only by where they come from.
    """
    scope = rate_limit.scope if rate_limit is not None else "Connector"
    if scope == "Connection":
        return ("Connection", *connection)
    if scope == "Credential":
        read = sorted({(s.secret, s.key) for s in credential_sources(spec, secret_variables)})
        if not read:
            return ()
        return ("Credential", connection[0], *(part for pair in read for part in pair))
    if scope == "Host":
        return ("Host", destination)
    return ()
