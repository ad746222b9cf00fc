"""How the benchmark measures: API writes, CPU seconds, and when a condition is met.

* Writes come from kube-apiserver's ``apiserver_request_total`` (before a round and after
  it has settled), minus the benchmark's own writes.
* CPU seconds per process come from ``/proc/<pid>/stat`` (this process: ``getrusage``).
* When N Connections meet a condition is seen through one watch of their namespace: every
  change arrives as it is stored, so times have no polling granularity, and the watch costs
  kube-apiserver one serialized event per change instead of a LIST of N objects per poll.
"""

from __future__ import annotations

import os
import re
import resource as rusage
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubeapi import Api, ApiError, BenchError, connections_path

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
# The resources a Connection's reconciliation may write; anything else is reported as "other".
TRACKED = ("connections", "connections/status", "secrets", "events")

# --- apiserver metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

RequestKey = tuple[str, str, str]  # resource[/subresource], verb, code


def request_totals(api: Api) -> Counter[RequestKey]:
    """apiserver_request_total, summed over labels other than resource, verb and code."""
    totals: Counter[RequestKey] = Counter()
    for line in api.text("/metrics").splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource = f"{resource}/{labels['subresource']}"
        key = (resource, labels.get("verb", ""), labels.get("code", ""))
        totals[key] += round(float(match["value"]))
    return totals


def diff(after: Counter[RequestKey], before: Counter[RequestKey]) -> Counter[RequestKey]:
    result: Counter[RequestKey] = Counter()
    for key, value in after.items():
        delta = value - before.get(key, 0)
        if delta:
            result[key] = delta
    return result


@dataclass
class Writes:
    """Write requests of one round, minus the ones the benchmark itself made.

    Keys: ``by_resource`` "resource[/subresource]", ``by_verb`` "resource VERB",
    ``failed`` "resource VERB code"; ``reads`` counts GETs of every client.
    """

    by_resource: dict[str, int] = field(default_factory=dict)
    by_verb: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, delta: Counter[RequestKey], own: Mapping[tuple[str, str], int]) -> Writes:
        by_resource: Counter[str] = Counter()
        by_verb: Counter[tuple[str, str]] = Counter()
        failed: Counter[str] = Counter()
        reads: Counter[str] = Counter()
        for (resource, verb, code), value in delta.items():
            if verb == "GET":
                reads[resource] += value
            if verb not in WRITE_VERBS:
                continue
            by_verb[(resource, verb)] += value
            by_resource[resource] += value
            if not code.startswith("2"):
                failed[f"{resource} {verb} {code}"] += value
        for (resource, verb), value in own.items():
            by_verb[(resource, verb)] -= value
            by_resource[resource] -= value
        return cls(
            dict(sorted((+by_resource).items())),
            {f"{r} {v}": n for (r, v), n in sorted((+by_verb).items())},
            dict(sorted(failed.items())),
            dict(sorted((+reads).items())),
        )

    def tracked(self) -> int:
        return sum(self.by_resource.get(r, 0) for r in TRACKED)


def settle(api: Api, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the tracked write counters have not moved for ``quiet`` seconds."""

    def snapshot() -> dict[RequestKey, int]:
        return {
            k: v for k, v in request_totals(api).items() if k[0] in TRACKED and k[1] in WRITE_VERBS
        }

    deadline = time.monotonic() + limit
    last = snapshot()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(min(1.0, quiet / 2))
        current = snapshot()
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return


# --- CPU --------------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command: state is field 3, utime field 14 and stime field 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def bench_cpu() -> float:
    """CPU seconds of this process: client threads, watch and the token API."""
    usage = rusage.getrusage(rusage.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds of some processes and of this one since ``start()``."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        found["bench"] = bench_cpu()
        return found

    def start(self) -> None:
        self._start = self._now()

    def read(self) -> dict[str, float]:
        return {k: round(v - self._start[k], 3) for k, v in self._now().items()}


@dataclass
class Round:
    """One measured phase."""

    seconds: float = 0.0  # first client write -> condition met
    client_seconds: float = 0.0  # first client write -> last client write answered
    writes: Writes | None = None
    server_requests: int = 0  # requests the token API got
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process
    watch_events: int = 0


class Clock:
    """Wall time from ``start()`` and the CPU time spent meanwhile, for one Round."""

    def __init__(self, round_: Round, pids: Mapping[str, int]) -> None:
        self.round = round_
        self.cpu = CpuMeter(pids)
        self.started = 0.0
        self.client_done: list[float] = []

    def start(self) -> None:
        self.cpu.start()
        self.started = time.monotonic()

    def client_wrote(self) -> None:
        self.client_done.append(time.monotonic())  # list.append is atomic

    @property
    def last_write(self) -> float:
        return max(self.client_done) if self.client_done else self.started

    def stop(self, seconds: float | None = None) -> None:
        """``seconds``: when the round's condition was met; default now."""
        self.round.seconds = round(
            time.monotonic() - self.started if seconds is None else seconds, 3
        )
        if self.client_done:
            self.round.client_seconds = round(max(self.client_done) - self.started, 3)
        self.round.cpu = self.cpu.read()


# --- watching Connections ---------------------------------------------------------------------


class WaitTimeout(BenchError):
    """A condition was not met in time."""


Predicate = Callable[[Mapping[str, Any]], bool]


class Watcher:
    """Follows the Connections of one namespace and records, per predicate, when the number
    of Connections meeting it first reached 1, 2, 3, ...

    ``prime()`` lists the namespace (the starting state and where the watch begins); call it
    before the writes whose effect ``until()`` then waits for.
    """

    def __init__(
        self,
        api: Api,
        namespace: str,
        predicates: Mapping[str, Predicate],
        stall: float | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.predicates = dict(predicates)
        # give up when no Connection of the namespace changed for this many seconds
        self.stall = stall
        self.last_change = 0.0
        self.met: dict[str, set[str]] = {key: set() for key in predicates}
        self.reached: dict[str, list[float]] = {key: [] for key in predicates}
        self.resource_version = ""
        self.events = 0

    def prime(self) -> None:
        body = self.api.get(connections_path(self.namespace))
        self.resource_version = str(body["metadata"]["resourceVersion"])
        now = time.monotonic()
        self.last_change = now
        for met in self.met.values():
            met.clear()
        for item in body.get("items") or []:
            self._see("ADDED", item, now)

    def _see(self, kind: str, obj: Mapping[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        for key, predicate in self.predicates.items():
            met = self.met[key]
            if kind != "DELETED" and predicate(obj):
                met.add(name)
                reached = self.reached[key]
                if len(met) > len(reached):
                    reached.append(now)
            else:
                met.discard(name)

    def count(self, key: str) -> int:
        return len(self.met[key])

    def _done(self, wants: Mapping[str, int]) -> bool:
        return all(len(self.reached[key]) >= n for key, n in wants.items())

    def until(
        self,
        wants: Mapping[str, int],
        started: float,
        timeout: float,
        what: str,
        check: Callable[[], None] = lambda: None,
    ) -> dict[str, float]:
        """Seconds after ``started`` at which each predicate was first met by ``wants[key]``
        Connections. ``check`` runs at least every second and may raise to give up."""
        deadline = started + timeout
        while True:
            check()
            if self._done(wants):
                return {key: self.reached[key][n - 1] - started for key, n in wants.items()}
            now = time.monotonic()
            remaining = deadline - now
            counts = ", ".join(f"{key} {self.count(key)}/{n}" for key, n in wants.items())
            if remaining <= 0:
                raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}: {counts}")
            quiet = now - max(self.last_change, started)
            if self.stall is not None and quiet > self.stall:
                raise WaitTimeout(
                    f"no Connection in {self.namespace} changed for {quiet:.0f}s while waiting "
                    f"for {what}: {counts}"
                )
            self._follow(wants, remaining, check)

    def _follow(self, wants: Mapping[str, int], seconds: float, check: Callable[[], None]) -> None:
        """One watch request, until done, ``seconds`` pass or one second without events."""
        query = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, min(60, int(seconds)))),
        }
        opened = last_check = time.monotonic()
        seen = 0
        try:
            for event in self.api.watch(connections_path(self.namespace), query, 1.0):
                kind = str(event.get("type"))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: list again
                        self.prime()
                        return
                    raise BenchError(f"watch of {self.namespace} failed: {obj.get('message')}")
                self.resource_version = str(obj["metadata"]["resourceVersion"])
                if kind == "BOOKMARK":
                    continue
                seen += 1
                self.events += 1
                now = self.last_change = time.monotonic()
                self._see(kind, obj, now)
                if self._done(wants) or now - opened > seconds:
                    return
                if now - last_check >= 1.0:
                    check()
                    last_check = now
        except ApiError as exc:
            if exc.status != 410:
                raise
            self.prime()
        except urllib3.exceptions.HTTPError:
            # Nothing arrived for a second (read timeout) or the connection broke: the caller
            # checks and opens the next watch from the last resourceVersion seen.
            if not seen and time.monotonic() - opened < 0.5:
                time.sleep(0.2)
