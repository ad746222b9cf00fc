"""The floors, the operator's first round and the re-verification rounds."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cluster import Operator, connector_connections, raise_failures, run_all, wait_all
from figures import ConnectorCount, Figures
from kubeapi import (
    APPLY_PATCH,
    MERGE_PATCH,
    Api,
    connections_path,
    events_path,
    is_ready,
    requested_at,
    secrets_path,
)
from manifests import (
    AUTH_FAILED,
    WRONG_TOKEN,
    binding_name,
    binding_secret,
    connection,
    event,
    failed_message,
    failed_status,
    ready_status,
    utc,
)
from measure import (
    Clock,
    Predicate,
    RequestKey,
    Round,
    Watcher,
    Writes,
    diff,
    request_totals,
    settle,
)
from servers import TokenServer

VERIFY_ANNOTATION = "patchbay.dev/verify-requested-at"
FLOOR_FIELD_MANAGER = "patchbay-floor"


@dataclass
class Bench:
    """What every round uses."""

    api: Api
    pool: ThreadPoolExecutor
    token: TokenServer
    control_plane_pids: Mapping[str, int]
    timeout: float
    operator: Operator | None = None
    last_create: float = 0.0  # when the last Connection create of any round was answered
    stall: float | None = None  # a wait gives up when no Connection changed for this long

    def pids(self) -> dict[str, int]:
        pids = dict(self.control_plane_pids)
        if self.operator is not None:
            pids["operator"] = self.operator.pid
        return pids

    def watcher(self, namespace: str, predicates: Mapping[str, Predicate]) -> Watcher:
        return Watcher(self.api, namespace, predicates, self.stall)

    def checker(self, futures: Sequence[Future[None]]) -> Callable[[], None]:
        def check() -> None:
            raise_failures(futures)
            if self.operator is not None:
                self.operator.check_alive()

        return check


# --- floors -----------------------------------------------------------------------------------


def measure_floor(bench: Bench, round_: Round, namespace: str, names: list[str]) -> None:
    """A bare client: per Connection a create and one small status patch."""
    clock = Clock(round_, bench.pids())
    api, base_url = bench.api, bench.token.base_url

    def create_and_patch(name: str) -> None:
        api.request("POST", connections_path(namespace), connection(name, base_url, "api-token"))
        status = {
            "status": {
                "phase": "Ready",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Verified",
                        "message": "",
                        "lastTransitionTime": utc(),
                        "observedGeneration": 1,
                    }
                ],
            }
        }
        api.request(
            "PATCH",
            connections_path(namespace, name, "status"),
            status,
            content_type=MERGE_PATCH,
        )
        clock.client_wrote()

    before = request_totals(api)
    clock.start()
    wait_all(run_all(bench.pool, create_and_patch, names))
    clock.stop()
    settle(api, quiet=1.0)
    round_.writes = Writes.of(diff(request_totals(api), before), {})


def measure_floor2(bench: Bench, figures: Figures, namespace: str, names: list[str]) -> None:
    """A bare client doing exactly the writes the design asks per Connection: create it
    (labelled, as admission would), apply its binding Secret, patch a full status, post
    the Verified Event."""
    round_ = figures.floor2
    clock = Clock(round_, bench.pids())
    api, base_url = bench.api, bench.token.base_url
    sizes: list[int] = []

    def one(name: str) -> None:
        created = api.request(
            "POST",
            connections_path(namespace),
            connection(name, base_url, "api-token", labelled=True),
        )
        uid = created["metadata"]["uid"]
        api.request(
            "PATCH",
            secrets_path(namespace, binding_name(name)),
            binding_secret(name, namespace, uid, base_url),
            content_type=APPLY_PATCH,
            query={"fieldManager": FLOOR_FIELD_MANAGER, "force": "true"},
        )
        now = time.time()
        status = ready_status(name, base_url, now)
        api.request(
            "PATCH",
            connections_path(namespace, name, "status"),
            {"status": status},
            content_type=MERGE_PATCH,
        )
        message = status["conditions"][-1]["message"]
        api.request(
            "POST",
            events_path(namespace),
            event(namespace, name, uid, "Verified", "Normal", message, now),
        )
        if not sizes:
            sizes.append(len(json.dumps(status, separators=(",", ":"))))
        clock.client_wrote()

    before = request_totals(api)
    clock.start()
    wait_all(run_all(bench.pool, one, names))
    clock.stop()
    settle(api, quiet=1.0)
    round_.writes = Writes.of(diff(request_totals(api), before), {})
    figures.status_bytes_floor2 = sizes[0] if sizes else 0


def measure_floor_failed(
    bench: Bench, namespace: str, names: list[str], failures: int, everything: bool
) -> float:
    """A bare client writing, on existing Connections, the AuthenticationFailed status a
    rotation to a wrong token makes the operator write; with ``everything`` also the binding
    Secret (it holds the token) and the transition Event, as the operator does."""
    round_ = Round()
    clock = Clock(round_, bench.pids())
    api, base_url = bench.api, bench.token.base_url

    def one(name: str) -> None:
        now = time.time()
        body = api.request(
            "PATCH",
            connections_path(namespace, name, "status"),
            {"status": failed_status(name, base_url, now, failures)},
            content_type=MERGE_PATCH,
        )
        if everything:
            uid = body["metadata"]["uid"]
            api.request(
                "PATCH",
                secrets_path(namespace, binding_name(name)),
                binding_secret(name, namespace, uid, base_url, WRONG_TOKEN),
                content_type=APPLY_PATCH,
                query={"fieldManager": FLOOR_FIELD_MANAGER, "force": "true"},
            )
            message = f"{AUTH_FAILED}: {failed_message(base_url)}"
            api.request(
                "POST",
                events_path(namespace),
                event(namespace, name, uid, "VerificationFailed", "Warning", message, now),
            )
        clock.client_wrote()

    clock.start()
    wait_all(run_all(bench.pool, one, names))
    clock.stop()
    settle(api, quiet=1.0)
    return round_.seconds


# --- the operator -----------------------------------------------------------------------------


def create_until(
    bench: Bench,
    round_: Round,
    namespace: str,
    bodies: list[dict[str, Any]],
    predicates: Mapping[str, Predicate],
    wants: Mapping[str, int],
    what: str,
) -> tuple[Watcher, Clock, dict[str, float]]:
    """Create ``bodies`` and wait until the watch shows ``wants``; the round's time is when
    the first key of ``wants`` was met. Counts the token API's requests meanwhile."""
    api = bench.api
    watcher = bench.watcher(namespace, predicates)
    watcher.prime()
    clock = Clock(round_, bench.pids())

    def create(body: dict[str, Any]) -> None:
        api.request("POST", connections_path(namespace), body)
        clock.client_wrote()

    served_before = bench.token.requests
    clock.start()
    futures = run_all(bench.pool, create, bodies)
    times = watcher.until(wants, clock.started, bench.timeout, what, bench.checker(futures))
    wait_all(futures)
    clock.stop(next(iter(times.values())))
    bench.last_create = clock.last_write
    round_.watch_events = watcher.events
    round_.server_requests = bench.token.requests - served_before
    return watcher, clock, times


def finish_writes(
    bench: Bench,
    round_: Round,
    before: Counter[RequestKey],
    own: Mapping[tuple[str, str], int],
) -> None:
    settle(bench.api)
    round_.writes = Writes.of(diff(request_totals(bench.api), before), own)


def measure_operator(
    bench: Bench, figures: Figures, namespace: str, names: list[str], secrets: list[str]
) -> float:
    """N Connections, each with its Secret, until all are Ready; returns when the last create
    was answered (monotonic)."""
    operator = bench.operator
    assert operator is not None
    n = len(names)
    base_url = bench.token.base_url
    bodies = [connection(name, base_url, secrets[i % len(secrets)]) for i, name in enumerate(names)]
    before = request_totals(bench.api)
    served_before = bench.token.requests
    watcher, clock, _ = create_until(
        bench, figures.operator, namespace, bodies, {"ready": is_ready}, {"ready": n}, "Ready=True"
    )
    figures.memory.ready_kib = operator.memory_kib().get("VmRSS", 0)
    figures.operator_90_seconds = round(
        watcher.reached["ready"][max(0, -(-9 * n // 10) - 1)] - clock.started, 3
    )
    count_connector(bench, figures.connector, n, clock.last_write)
    finish_writes(bench, figures.operator, before, {("connections", "POST"): n})
    figures.operator.server_requests = bench.token.requests - served_before
    sample = bench.api.get(connections_path(namespace, names[0]))
    figures.status_bytes_operator = len(json.dumps(sample.get("status"), separators=(",", ":")))
    figures.connection_bytes = len(json.dumps(sample, separators=(",", ":")))
    return clock.last_write


def count_connector(
    bench: Bench, count: ConnectorCount, expected: int, last_change: float, limit: float = 30.0
) -> None:
    """Reads the ClusterConnector's status.connections right away, then every 0.1 s up to
    ``limit`` s until it equals ``expected``; records when that was seen, after the last
    change (``last_change``, monotonic)."""
    count.expected = expected
    deadline = time.monotonic() + limit
    value = connector_connections(bench.api)
    count.first_read = value
    count.first_read_seconds = round(time.monotonic() - last_change, 2)
    while True:
        count.final = value
        if value == expected:
            count.exact_after_seconds = round(max(0.0, time.monotonic() - last_change), 2)
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)
        value = connector_connections(bench.api)


def measure_reverify(bench: Bench, round_: Round, namespace: str, names: list[str]) -> None:
    """Annotate every Connection with a new verify-requested-at; until every status carries it."""
    api = bench.api
    n = len(names)
    # Whole seconds: wait for the next one so the value differs from any earlier request.
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    moment = utc()
    patch = {"metadata": {"annotations": {VERIFY_ANNOTATION: moment}}}
    watcher = bench.watcher(namespace, {"done": lambda obj: requested_at(obj) == moment})
    watcher.prime()
    clock = Clock(round_, bench.pids())

    def annotate(name: str) -> None:
        api.request("PATCH", connections_path(namespace, name), patch, content_type=MERGE_PATCH)
        clock.client_wrote()

    before = request_totals(api)
    served_before = bench.token.requests
    clock.start()
    futures = run_all(bench.pool, annotate, names)
    times = watcher.until(
        {"done": n},
        clock.started,
        bench.timeout,
        f"status.verification.requestedAt={moment}",
        bench.checker(futures),
    )
    wait_all(futures)
    clock.stop(times["done"])
    round_.watch_events = watcher.events
    finish_writes(bench, round_, before, Counter({("connections", "PATCH"): n}))
    round_.server_requests = bench.token.requests - served_before
