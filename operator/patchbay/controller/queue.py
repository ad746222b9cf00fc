"""A de-duplicating work queue of object keys, with the semantics of client-go's workqueue.

- A key is queued at most once, however often it is added.
- A key is never handed to two workers at once: added while it is being
  processed, it is marked dirty and queued again when that processing is done.
- A key waits for at most one wake-up: ``add_after`` keeps the earlier of two
  times, and ``add`` replaces any pending wake-up, since processing decides
  the next one anyway.
- Failures back off per key, exponentially with jitter, until ``forget``.

One timer handle per waiting key and a set per state: no task per object.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        base_delay: float = 5.0,
        max_delay: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        """Keys queued or waiting for a wake-up (not those being processed)."""
        return len(self._queued) + len(self._timers)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being processed (wake-ups may be pending)."""
        return not self._queued and not self._processing

    def add(self, key: K) -> None:
        self._cancel_timer(key)
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= when:
                return
            pending.cancel()
        self._timers[key] = loop.call_at(when, self._wake, key)

    def add_rate_limited(self, key: K) -> float:
        """Queue the key again after its failure backoff; returns the delay chosen."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        ceiling = min(self._max_delay, self._base_delay * 2.0 ** min(failures - 1, 20))
        delay = ceiling * self._rng.uniform(0.5, 1.0)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """The object is gone: no wake-up, no backoff. A queued key still comes out once."""
        self._cancel_timer(key)
        self._failures.pop(key, None)
        self._dirty.discard(key)

    def waiting(self, key: K) -> float | None:
        """Seconds until the key's pending wake-up, if it has one."""
        pending = self._timers.get(key)
        if pending is None:
            return None
        return max(0.0, pending.when() - asyncio.get_running_loop().time())

    async def get(self) -> K:
        key = await self._ready.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def _wake(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _cancel_timer(self, key: K) -> None:
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending.cancel()

    def close(self) -> None:
        for pending in self._timers.values():
            pending.cancel()
        self._timers.clear()
