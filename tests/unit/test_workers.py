"""CPU-bound work and host lookups run in separate thread pools, so neither waits for the other."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncssh
import pytest

from patchbay import workers
from patchbay.api.connector import AuthSpec
from patchbay.core.egress import EgressPolicy
from patchbay.drivers.base import VerifyRequest
from patchbay.drivers.sftp import _auth_options

# Only a guard against a deadlock: a correct pool answers long before.
DEADLOCK_GUARD_SECONDS = 60


class Blockers:
    """Calls that hold their thread until released, counting how many have started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.started = 0

    def block(self) -> None:
        with self._lock:
            self.started += 1
        self.release.wait()

    async def until_started(self, count: int) -> None:
        for _ in range(DEADLOCK_GUARD_SECONDS * 100):
            if self.started >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {self.started} of {count} blocking calls started")


@pytest.fixture
def blockers() -> Iterator[Blockers]:
    held = Blockers()
    yield held
    held.release.set()  # also when the test failed: no thread stays held


async def finished(work: asyncio.Future[Any]) -> bool:
    done, _ = await asyncio.wait({work}, timeout=DEADLOCK_GUARD_SECONDS)
    return work in done


def test_host_lookup_completes_while_the_cpu_pool_and_the_default_executor_are_full(
    blockers: Blockers,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        held = [asyncio.ensure_future(workers.run_cpu(blockers.block)) for _ in range(8)]
        held += [asyncio.ensure_future(asyncio.to_thread(blockers.block)) for _ in range(4)]
        await blockers.until_started(workers.CPU_WORKERS + 2)

        lookup = asyncio.ensure_future(EgressPolicy().resolve("localhost", 80))
        try:
            assert await finished(lookup)
        finally:
            blockers.release.set()
        addresses = lookup.result()
        assert addresses
        assert all(address.is_loopback for address in addresses)
        await asyncio.gather(*held)

    asyncio.run(scenario())


def test_private_key_is_decrypted_while_the_default_executor_is_full(
    blockers: Blockers,
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    request = VerifyRequest(
        config={},
        secrets={
            "privateKey": key.export_private_key(
                "openssh", passphrase="pw", rounds=16, ignore_few_rounds=True
            ).decode(),
            "passphrase": "pw",
        },
        auth=AuthSpec.model_validate({"type": "sshKey"}),
    )

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        held = [asyncio.ensure_future(asyncio.to_thread(blockers.block)) for _ in range(3)]
        await blockers.until_started(2)

        loading = asyncio.ensure_future(_auth_options(request))
        try:
            assert await finished(loading)
        finally:
            blockers.release.set()
        loaded = loading.result()["client_keys"]
        assert isinstance(loaded, list)
        assert [k.public_data for k in loaded] == [key.public_data]
        await asyncio.gather(*held)

    asyncio.run(scenario())


def test_cpu_work_still_queued_when_its_caller_is_cancelled_never_runs(
    blockers: Blockers,
) -> None:
    ran = threading.Event()

    async def scenario() -> None:
        held = [
            asyncio.ensure_future(workers.run_cpu(blockers.block))
            for _ in range(workers.CPU_WORKERS)
        ]
        await blockers.until_started(workers.CPU_WORKERS)
        queued = asyncio.ensure_future(workers.run_cpu(ran.set))
        await asyncio.sleep(0)  # handed to the pool, where every thread is busy
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        blockers.release.set()
        await asyncio.gather(*held)
        # The pool takes work in order: once these ran, the cancelled call had its turn.
        await asyncio.gather(*(workers.run_cpu(int) for _ in range(workers.CPU_WORKERS)))

    asyncio.run(scenario())
    assert not ran.is_set()
