"""The token bucket of a connector's rateLimit.

A worker of the work queue must never block waiting for tokens, or a throttled
connector would hold the workers every other connector needs. So the bucket
answers at once: a token now, or how long until the next one, and the caller
comes back then.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
