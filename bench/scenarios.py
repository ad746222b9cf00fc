"""Scenarios on top of N Ready Connections: Secret rotation (one Secret, a shared Secret)
and black-holed hosts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from figures import BlackHoleRound, Figures, Rotation, SharedRotation
from kubeapi import (
    MERGE_PATCH,
    connections_path,
    is_failed,
    is_ready,
    ready_reason,
    secrets_path,
)
from manifests import AUTH_FAILED, TOKEN, WRONG_TOKEN, connection, names
from measure import Clock, WaitTimeout, request_totals
from rounds import Bench, create_until, finish_writes
from servers import BlackHole

POLL_SECONDS = 0.05  # GET interval while waiting for one rotated Connection


def _set_token(bench: Bench, namespace: str, secret: str, token: str) -> None:
    bench.api.request(
        "PATCH",
        secrets_path(namespace, secret),
        {"stringData": {"token": token}},
        content_type=MERGE_PATCH,
    )


def _wait_reason(
    bench: Bench, namespace: str, name: str, reason: str, started: float, limit: float
) -> float | None:
    """GET the Connection every POLL_SECONDS until its Ready reason is ``reason``; seconds
    after ``started``, or None after ``limit`` seconds."""
    polls = 0
    while True:
        obj = bench.api.get(connections_path(namespace, name))
        now = time.monotonic()
        if ready_reason(obj) == reason:
            return now - started
        if now - started > limit:
            return None
        polls += 1
        time.sleep(max(0.0, started + polls * POLL_SECONDS - time.monotonic()))


def measure_rotation(
    bench: Bench,
    rotation: Rotation,
    namespace: str,
    connections: list[str],
    secrets: list[str],
    count: int,
    limit: float = 30.0,
) -> None:
    """Rotate ``count`` Secrets of single Connections to a wrong token, one at a time, 1 s
    apart; per Secret the time from the update to the Connection's AuthenticationFailed.
    Then restore them all and wait until those Connections are Ready again."""
    n = len(connections)
    if len(secrets) != n:
        rotation.skipped = "Connections share Secrets (--secrets below --count)"
        return
    if count <= 0:
        rotation.skipped = "--rotations 0"
        return
    assert bench.operator is not None
    picks = sorted({i * n // count for i in range(min(count, n))})
    rotation.secrets = len(picks)
    rotated: list[int] = []
    for index in picks:
        bench.operator.check_alive()
        started = time.monotonic()
        _set_token(bench, namespace, secrets[index], WRONG_TOKEN)
        rotated.append(index)
        seconds = _wait_reason(bench, namespace, connections[index], AUTH_FAILED, started, limit)
        if seconds is None:
            rotation.timed_out += 1
            break  # one is enough to know; do not wait `limit` for every other one
        rotation.seconds.append(round(seconds, 3))
        time.sleep(1.0)

    mine = {connections[i] for i in rotated}
    watcher = bench.watcher(
        namespace,
        {"ready": lambda obj: obj["metadata"]["name"] in mine and is_ready(obj)},
    )
    watcher.prime()
    started = time.monotonic()
    for index in rotated:
        _set_token(bench, namespace, secrets[index], TOKEN)
    try:
        times = watcher.until(
            {"ready": len(rotated)},
            started,
            bench.timeout,
            "restored Connections Ready",
            bench.checker([]),
        )
        rotation.restore_seconds = round(times["ready"], 3)
    except WaitTimeout:
        rotation.restore_seconds = None


def measure_shared(bench: Bench, shared: SharedRotation, namespace: str, count: int) -> None:
    """``count`` Connections sharing the Secret ``api-token`` of their namespace: created until
    Ready, then the Secret rotated to a wrong token until all show AuthenticationFailed, then
    restored until all are Ready."""
    api = bench.api
    shared.count = count
    base_url = bench.token.base_url
    bodies = [connection(name, base_url, "api-token") for name in names("conn", count)]
    before = request_totals(api)
    create_until(
        bench, shared.ready, namespace, bodies, {"ready": is_ready}, {"ready": count}, "Ready=True"
    )
    finish_writes(bench, shared.ready, before, {("connections", "POST"): count})

    round_ = shared.rotation
    watcher = bench.watcher(namespace, {"failed": lambda obj: ready_reason(obj) == AUTH_FAILED})
    watcher.prime()
    clock = Clock(round_, bench.pids())
    before = request_totals(api)
    served_before = bench.token.requests
    clock.start()
    _set_token(bench, namespace, "api-token", WRONG_TOKEN)
    clock.client_wrote()
    times = watcher.until(
        {"failed": count}, clock.started, bench.timeout, AUTH_FAILED, bench.checker([])
    )
    clock.stop(times["failed"])
    reached = watcher.reached["failed"]
    shared.first_seconds = round(reached[0] - clock.started, 3)
    shared.half_seconds = round(reached[(count - 1) // 2] - clock.started, 3)
    round_.watch_events = watcher.events
    finish_writes(bench, round_, before, {("secrets", "PATCH"): 1})
    round_.server_requests = bench.token.requests - served_before

    watcher = bench.watcher(namespace, {"ready": is_ready})
    watcher.prime()
    started = time.monotonic()
    _set_token(bench, namespace, "api-token", TOKEN)
    try:
        times = watcher.until(
            {"ready": count}, started, bench.timeout, "Ready=True after restore", bench.checker([])
        )
        shared.restore_seconds = round(times["ready"], 3)
    except WaitTimeout:
        shared.restore_seconds = None


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def measure_blackhole(
    bench: Bench,
    figures: Figures,
    bh: BlackHoleRound,
    hole: BlackHole,
    healthy_namespace: str,
    mixed_namespace: str,
    count: int,
    timeout_seconds: int,
) -> None:
    """The healthy number alone (baseline), then ``count`` Connections of which every tenth
    points at the black hole: until the healthy ones are Ready, then until the black-holed
    ones are Ready=False."""
    api = bench.api
    width = len(str(max(0, count - 1)))
    holed = [i for i in range(count) if i % 10 == 0]
    bh.count, bh.blackholed, bh.healthy = count, len(holed), count - len(holed)
    bh.timeout_seconds = timeout_seconds
    bh.first_round_scaled_seconds = round(figures.operator.seconds * bh.healthy / figures.count, 3)
    base_url = bench.token.base_url

    bodies = [connection(name, base_url, "api-token") for name in names("ok", bh.healthy)]
    before = request_totals(api)
    create_until(
        bench,
        bh.baseline,
        healthy_namespace,
        bodies,
        {"ready": is_ready},
        {"ready": bh.healthy},
        "Ready=True (healthy alone)",
    )
    finish_writes(bench, bh.baseline, before, {("connections", "POST"): bh.healthy})

    bodies = [
        connection(f"bh-{i:0{width}d}", hole.base_url, "api-token", timeout=f"{timeout_seconds}s")
        if i % 10 == 0
        else connection(f"ok-{i:0{width}d}", base_url, "api-token")
        for i in range(count)
    ]
    predicates = {
        "healthy": lambda obj: _name(obj).startswith("ok-") and is_ready(obj),
        "blackholed": lambda obj: _name(obj).startswith("bh-") and is_failed(obj),
    }
    watcher, clock, _ = create_until(
        bench,
        bh.mixed,
        mixed_namespace,
        bodies,
        predicates,
        {"healthy": bh.healthy},
        "the healthy Connections Ready=True (with black-holed ones)",
    )
    # The black-holed ones are not what this round measures: wait for them a bounded time.
    wait = min(bench.timeout, time.monotonic() - clock.started + 4 * timeout_seconds + 30)
    if watcher.stall is not None:  # they change only as their timeouts end
        watcher.stall = max(watcher.stall, 2 * timeout_seconds + 30)
    try:
        times = watcher.until(
            {"blackholed": bh.blackholed},
            clock.started,
            wait,
            "the black-holed Connections Ready=False",
            bench.checker([]),
        )
        bh.blackholed_seconds = round(times["blackholed"], 3)
    except WaitTimeout:
        bh.blackholed_seconds = None
    bh.blackholed_waited_seconds = round(time.monotonic() - clock.started, 3)
    bh.blackholed_reported = watcher.count("blackholed")
    items = api.get(connections_path(mixed_namespace)).get("items") or []
    bh.blackholed_reasons = dict(
        Counter(str(ready_reason(obj)) for obj in items if _name(obj).startswith("bh-"))
    )
    bh.accepted, bh.most_open = hole.accepted, hole.most_open
