"""A cap on verifications in flight to one destination (driver and host:port).

A host that accepts connections and never answers holds its verifications
until their timeout. Capped per destination, it holds only its own share of
the workers, never the ones every other system's Connections need.

A key turned away waits in its destination's line without holding a worker.
When a slot frees, it is handed to the first key in line, which the queue
then brings back; a key that comes back and no longer needs its slot (its
verification was no longer due) hands the slot on, so the line never stalls.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class _Line(Generic[K]):
    in_flight: int = 0
    waiting: dict[K, None] = field(default_factory=dict)  # an ordered set


class DestinationGates(Generic[K]):
    def __init__(self, limit: int, wake: Callable[[K], None]) -> None:
        self.limit = limit
        self._wake = wake
        self._lines: dict[str, _Line[K]] = {}
        self._handed: dict[K, str] = {}  # slots handed to a key that has not come back yet

    def enter(self, target: str, key: K) -> bool:
        """True when the key may verify now (it then owes a leave); False: it waits."""
        handed = self._handed.pop(key, None)
        if handed == target:
            return True
        if handed is not None:
            self.leave(handed)  # handed a slot elsewhere: its destination changed
        line = self._lines.setdefault(target, _Line())
        if line.in_flight >= self.limit:
            line.waiting[key] = None
            return False
        line.in_flight += 1
        return True

    def leave(self, target: str) -> None:
        line = self._lines[target]
        if line.waiting:
            key = next(iter(line.waiting))
            del line.waiting[key]
            self._handed[key] = target  # the slot stays taken, for that key
            self._wake(key)
            return
        line.in_flight -= 1
        if line.in_flight == 0:
            del self._lines[target]

    def release_unused(self, key: K) -> None:
        """After the key was processed: a slot handed to it and not used goes on."""
        handed = self._handed.pop(key, None)
        if handed is not None:
            self.leave(handed)

    def forget(self, key: K) -> None:
        """The key is gone: out of every line, and any slot handed to it goes on."""
        for line in self._lines.values():
            line.waiting.pop(key, None)
        self.release_unused(key)

    def in_flight(self, target: str) -> int:
        line = self._lines.get(target)
        return line.in_flight if line else 0
