"""The work queue hands each key to one worker at a time and never loses a change."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from patchbay.controller.queue import WorkQueue

T = TypeVar("T")


def run(scenario: Callable[[WorkQueue[str]], Awaitable[T]]) -> T:
    async def main() -> T:
        queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.04, rng=random.Random(1))
        try:
            return await scenario(queue)
        finally:
            queue.close()

    return asyncio.run(main())


async def drain(queue: WorkQueue[str]) -> list[str]:
    """Every key ready now, each marked done at once."""
    keys = []
    while True:
        try:
            key = await asyncio.wait_for(queue.get(), 0.05)
        except TimeoutError:
            return keys
        keys.append(key)
        queue.done(key)


def test_a_key_added_many_times_is_processed_once() -> None:
    async def scenario(queue: WorkQueue[str]) -> list[str]:
        for key in ("a", "b", "a", "a", "b"):
            queue.add(key)
        return await drain(queue)

    assert run(scenario) == ["a", "b"]


def test_a_key_added_while_processed_is_not_handed_out_twice_but_comes_back_after() -> None:
    async def scenario(queue: WorkQueue[str]) -> list[str]:
        queue.add("a")
        first = await queue.get()
        queue.add("a")  # a change arrives during processing
        concurrent = await drain(queue)
        queue.done(first)
        return [first, *concurrent, "|", *(await drain(queue))]

    assert run(scenario) == ["a", "|", "a"]


def test_a_key_not_changed_during_processing_does_not_come_back() -> None:
    async def scenario(queue: WorkQueue[str]) -> list[str]:
        queue.add("a")
        queue.done(await queue.get())
        return await drain(queue)

    assert run(scenario) == []


@pytest.mark.parametrize("delays", [(0.2, 0.02), (0.02, 0.2)], ids=["later-first", "earlier-first"])
def test_of_two_wake_ups_for_one_key_the_earlier_is_kept(delays: tuple[float, float]) -> None:
    async def scenario(queue: WorkQueue[str]) -> tuple[float | None, list[str]]:
        queue.add_after("a", delays[0])
        queue.add_after("a", delays[1])
        waiting = queue.waiting("a")
        return waiting, await drain(queue)

    waiting, keys = run(scenario)
    assert waiting is not None and waiting <= min(delays)
    assert keys == ["a"]


def test_adding_now_replaces_a_pending_wake_up() -> None:
    async def scenario(queue: WorkQueue[str]) -> tuple[list[str], float | None]:
        queue.add_after("a", 30)
        queue.add("a")
        return await drain(queue), queue.waiting("a")

    keys, waiting = run(scenario)
    assert keys == ["a"]
    assert waiting is None


def test_failures_back_off_longer_each_time_until_forgotten() -> None:
    async def scenario(queue: WorkQueue[str]) -> list[float]:
        delays = [queue.add_rate_limited("a") for _ in range(4)]
        queue.forget("a")
        delays.append(queue.add_rate_limited("a"))
        return delays

    first, second, third, capped, after_forget = run(scenario)
    assert 0.005 <= first <= 0.01
    assert 0.01 <= second <= 0.02
    assert 0.02 <= third <= 0.04
    assert capped <= 0.04
    assert after_forget <= 0.01


def test_a_discarded_key_has_no_wake_up_left() -> None:
    async def scenario(queue: WorkQueue[str]) -> list[str]:
        queue.add_after("gone", 0.01)
        queue.discard("gone")
        await asyncio.sleep(0.03)
        return await drain(queue)

    assert run(scenario) == []


def test_two_workers_never_hold_the_same_key() -> None:
    async def scenario(queue: WorkQueue[str]) -> int:
        holding: set[str] = set()
        overlaps = 0

        async def worker() -> None:
            nonlocal overlaps
            while True:
                key = await queue.get()
                if key in holding:
                    overlaps += 1
                holding.add(key)
                await asyncio.sleep(0.001)
                holding.discard(key)
                queue.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for i in range(200):
            queue.add(f"k{i % 5}")
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return overlaps

    assert run(scenario) == 0
