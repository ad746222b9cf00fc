"""Benchmark: how fast and how cheaply the operator makes N http Connections Ready.

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager on 127.0.0.1),
a token HTTP API on 127.0.0.1 and the operator, then measures

* FLOOR: a bare client creating N Connections and patching each one's status once,
* OPERATOR: N Connections created the same way until the operator shows all Ready=True,
* RE-VERIFY: every Connection annotated with patchbay.dev/verify-requested-at until every
  status.verification.requestedAt carries the new value,

and counts the API writes (kube-apiserver's ``apiserver_request_total``) per Connection.
It reports figures and asserts nothing about time::

    python bench/connections.py --count 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import resource as rusage
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "hack"))

import localcluster  # noqa: E402
import localwebhooks  # noqa: E402
from localserver import stop_process  # noqa: E402

GROUP, VERSION, PLURAL = "patchbay.dev", "v1alpha1", "connections"
FLOOR_NS, BENCH_NS = "floor", "bench"
SECRET = "api-token"
TOKEN = "bench-token-0123456789abcdef"
VERIFY_ANNOTATION = "patchbay.dev/verify-requested-at"
MERGE_PATCH = "application/merge-patch+json"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
# The resources a Connection's reconciliation may write; anything else is reported as "other".
TRACKED = ("connections", "connections/status", "secrets", "events")
DEFAULT_POLL_INTERVAL = 0.5

# --- the token API ----------------------------------------------------------------------------


@dataclass
class TokenServer:
    """Answers 200 to ``Authorization: Bearer <token>``, 401 otherwise; counts requests."""

    token: str
    port: int = 0
    requests: int = 0
    authorized: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        # Runs on the server's own loop thread only, so plain increments are safe.
        self.requests += 1
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            self.authorized += 1
            return web.json_response({"ok": True}, headers={"Server": "bench-api/1.0"})
        return web.json_response({"error": "invalid token"}, status=401)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if not sockets:
            raise BenchError("the token API did not bind a socket")
        self.port = int(sockets[0].getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None


# --- the operator -----------------------------------------------------------------------------


class Operator:
    """``patchbay run`` in a subprocess, its JSON log in a file."""

    def __init__(
        self, cp: localcluster.ControlPlane, log_path: Path, namespace: str, *extra: str
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "patchbay.cli",
                "run",
                "-n",
                namespace,
                "--log-format",
                "json",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
            cwd=REPO_ROOT,
        )

    def check_alive(self) -> None:
        rc = self.process.poll()
        if rc is not None:
            raise BenchError(f"the operator exited with code {rc}; log tail:\n{self.tail()}")

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) from /proc, in KiB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self) -> int:
        return len(self.log_path.read_text(errors="replace").splitlines())

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


# --- API helpers ------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """The benchmark could not complete."""


def custom_objects(kubeconfig: Path, pool_size: int) -> k8s_client.CustomObjectsApi:
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    configuration.proxy = None  # loopback only
    configuration.connection_pool_maxsize = pool_size
    return k8s_client.CustomObjectsApi(k8s_client.ApiClient(configuration))


def connection(name: str, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {
            "connectorRef": {"kind": "ClusterConnector", "name": "http-api"},
            "config": {"baseUrl": base_url},
            "credentials": {"secretRef": {"name": SECRET}},
        },
    }


def names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"conn-{i:0{width}d}" for i in range(count)]


def list_connections(api: k8s_client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    body = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    if not isinstance(body, dict):
        raise BenchError(f"unexpected list answer: {type(body).__name__}")
    items: list[dict[str, Any]] = body.get("items", [])
    return items


def is_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def requested_at(obj: dict[str, Any]) -> str | None:
    value = ((obj.get("status") or {}).get("verification") or {}).get("requestedAt")
    return value if isinstance(value, str) else None


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_all(
    pool: ThreadPoolExecutor, fn: Callable[[str], None], keys: list[str]
) -> list[Future[None]]:
    return [pool.submit(fn, key) for key in keys]


def raise_failures(futures: list[Future[None]]) -> None:
    for future in futures:
        if future.done() and not future.cancelled():
            exc = future.exception()
            if exc is not None:
                raise BenchError(f"a benchmark request failed: {exc}") from exc


def poll_until(
    api: k8s_client.CustomObjectsApi,
    namespace: str,
    count: int,
    done: Callable[[dict[str, Any]], bool],
    futures: list[Future[None]],
    operator: Operator,
    timeout: float,
    what: str,
    interval: float,
) -> int:
    """List every ``interval`` s until ``done`` holds for ``count`` objects; returns list calls."""
    started = time.monotonic()
    lists = 0
    while True:
        raise_failures(futures)
        operator.check_alive()
        items = list_connections(api, namespace)
        lists += 1
        finished = sum(1 for obj in items if done(obj))
        if finished >= count and all(f.done() for f in futures):
            return lists
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise BenchError(
                f"timed out after {elapsed:.0f}s waiting for {what}: {finished}/{count}"
            )
        time.sleep(max(0.0, started + lists * interval - time.monotonic()))


# --- apiserver metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

RequestKey = tuple[str, str, str]  # resource[/subresource], verb, code


def request_totals(cp: localcluster.ControlPlane) -> Counter[RequestKey]:
    """apiserver_request_total, summed over labels other than resource, verb and code."""
    totals: Counter[RequestKey] = Counter()
    for line in cp.kubectl("get", "--raw", "/metrics").stdout.splitlines():
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
    """Write requests of one round, minus the ones the benchmark itself made."""

    by_resource: Counter[str]
    by_verb: Counter[tuple[str, str]]
    failed: Counter[RequestKey]
    reads: Counter[str]

    @classmethod
    def of(cls, delta: Counter[RequestKey], own: Counter[tuple[str, str]]) -> Writes:
        by_resource: Counter[str] = Counter()
        by_verb: Counter[tuple[str, str]] = Counter()
        failed: Counter[RequestKey] = Counter()
        reads: Counter[str] = Counter()
        for (resource, verb, code), value in delta.items():
            if verb == "GET":
                reads[resource] += value
            if verb not in WRITE_VERBS:
                continue
            by_verb[(resource, verb)] += value
            by_resource[resource] += value
            if not code.startswith("2"):
                failed[(resource, verb, code)] += value
        for (resource, verb), value in own.items():
            by_verb[(resource, verb)] -= value
            by_resource[resource] -= value
        return cls(+by_resource, +by_verb, failed, +reads)

    def tracked(self) -> int:
        return sum(self.by_resource[r] for r in TRACKED)


def settle(cp: localcluster.ControlPlane, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the tracked write counters have not moved for ``quiet`` seconds."""

    def snapshot() -> dict[RequestKey, int]:
        return {
            k: v for k, v in request_totals(cp).items() if k[0] in TRACKED and k[1] in WRITE_VERBS
        }

    deadline = time.monotonic() + limit
    last = snapshot()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        current = snapshot()
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            return


# --- the benchmark ----------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command: state is field 3, utime field 14 and stime field 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class Round:
    """One measured phase."""

    seconds: float = 0.0  # first client write -> condition seen by the poller
    client_seconds: float = 0.0  # first client write -> last client write answered
    writes: Writes | None = None
    server_requests: int = 0
    lists: int = 0  # LIST calls of the poller
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process


@dataclass
class ListCost:
    """What one poll (a LIST of the N Connections in BENCH_NS) costs, measured when idle."""

    seconds: float = 0.0
    apiserver_cpu: float = 0.0
    bench_cpu: float = 0.0
    object_bytes: int = 0  # mean JSON size of one Connection


@dataclass
class Figures:
    count: int
    concurrency: int
    poll_interval: float
    webhooks: bool = False
    floor: Round = field(default_factory=Round)
    operator: Round = field(default_factory=Round)
    reverify: Round = field(default_factory=Round)
    list_cost: ListCost | None = None
    rss_after_ready_kib: int = 0
    rss_end_kib: int = 0
    peak_rss_kib: int = 0
    operator_log_lines: int = 0
    connector_connections: str = ""


def bench_cpu() -> float:
    """CPU seconds of this process: client threads, poller and the token API."""
    usage = rusage.getrusage(rusage.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds of the control plane, the operator and this process since ``start()``."""

    def __init__(self, cp: localcluster.ControlPlane, operator: Operator | None) -> None:
        self.pids = {name: cp.pids[name] for name in localcluster.COMPONENTS}
        if operator is not None:
            self.pids["operator"] = operator.process.pid
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        found["bench"] = bench_cpu()
        return found

    def start(self) -> None:
        self._start = self._now()

    def read(self) -> dict[str, float]:
        return {k: v - self._start[k] for k, v in self._now().items()}


class Clock:
    """Wall time from ``start()`` and the CPU time spent meanwhile, for one Round."""

    def __init__(
        self, round_: Round, cp: localcluster.ControlPlane, operator: Operator | None
    ) -> None:
        self.round = round_
        self.cpu = CpuMeter(cp, operator)
        self.started = 0.0
        self.client_done: list[float] = []

    def start(self) -> None:
        self.cpu.start()
        self.started = time.monotonic()

    def client_wrote(self) -> None:
        self.client_done.append(time.monotonic())  # list.append is atomic

    def stop(self) -> None:
        self.round.seconds = time.monotonic() - self.started
        if self.client_done:
            self.round.client_seconds = max(self.client_done) - self.started
        self.round.cpu = self.cpu.read()


def measure_list_cost(
    cp: localcluster.ControlPlane, api: k8s_client.CustomObjectsApi, repeat: int = 5
) -> ListCost:
    meter = CpuMeter(cp, None)
    meter.start()
    started = time.monotonic()
    items: list[dict[str, Any]] = []
    for _ in range(repeat):
        items = list_connections(api, BENCH_NS)
    seconds = time.monotonic() - started
    cpu = meter.read()
    size = len(json.dumps(items)) // max(1, len(items))
    return ListCost(seconds / repeat, cpu["kube-apiserver"] / repeat, cpu["bench"] / repeat, size)


def setup_cluster(cp: localcluster.ControlPlane) -> None:
    localcluster.install_crds(cp, REPO_ROOT / "crds")
    cp.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    for namespace in (FLOOR_NS, BENCH_NS):
        cp.kubectl("create", "namespace", namespace)
        cp.kubectl(
            "create",
            "secret",
            "generic",
            SECRET,
            "-n",
            namespace,
            f"--from-literal=token={TOKEN}",
        )


def wait_operator_ready(cp: localcluster.ControlPlane, operator: Operator, timeout: float) -> None:
    """The operator writes the ClusterConnector's status once its watches run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operator.check_alive()
        out = cp.kubectl(
            "get",
            "clusterconnector",
            "http-api",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ).stdout
        if out.strip():
            return
        time.sleep(0.25)
    raise BenchError(f"the operator did not report the ClusterConnector within {timeout:.0f}s")


def measure_floor(
    cp: localcluster.ControlPlane,
    api: k8s_client.CustomObjectsApi,
    pool: ThreadPoolExecutor,
    figures: Figures,
    base_url: str,
) -> None:
    clock = Clock(figures.floor, cp, None)

    def create_and_patch(name: str) -> None:
        api.create_namespaced_custom_object(
            GROUP, VERSION, FLOOR_NS, PLURAL, connection(name, base_url)
        )
        status = {
            "status": {
                "phase": "Ready",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Verified",
                        "message": "",
                        "lastTransitionTime": utc_now(),
                        "observedGeneration": 1,
                    }
                ],
            }
        }
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, FLOOR_NS, PLURAL, name, status, _content_type=MERGE_PATCH
        )
        clock.client_wrote()

    before = request_totals(cp)
    clock.start()
    futures = run_all(pool, create_and_patch, names(figures.count))
    for future in futures:
        future.result()
    clock.stop()
    settle(cp, quiet=1.0)
    figures.floor.writes = Writes.of(diff(request_totals(cp), before), Counter())


def measure_operator(
    cp: localcluster.ControlPlane,
    api: k8s_client.CustomObjectsApi,
    pool: ThreadPoolExecutor,
    figures: Figures,
    server: TokenServer,
    operator: Operator,
    timeout: float,
) -> None:
    n = figures.count
    clock = Clock(figures.operator, cp, operator)

    def create(name: str) -> None:
        api.create_namespaced_custom_object(
            GROUP, VERSION, BENCH_NS, PLURAL, connection(name, server.base_url)
        )
        clock.client_wrote()

    before = request_totals(cp)
    served_before = server.requests
    clock.start()
    futures = run_all(pool, create, names(n))
    figures.operator.lists = poll_until(
        api, BENCH_NS, n, is_ready, futures, operator, timeout, "Ready=True", figures.poll_interval
    )
    clock.stop()
    figures.rss_after_ready_kib = operator.memory_kib().get("VmRSS", 0)
    settle(cp)
    own = Counter({("connections", "POST"): n})
    figures.operator.writes = Writes.of(diff(request_totals(cp), before), own)
    figures.operator.server_requests = server.requests - served_before


def measure_reverify(
    cp: localcluster.ControlPlane,
    api: k8s_client.CustomObjectsApi,
    pool: ThreadPoolExecutor,
    figures: Figures,
    server: TokenServer,
    operator: Operator,
    timeout: float,
) -> None:
    n = figures.count
    clock = Clock(figures.reverify, cp, operator)
    # Whole seconds: wait for the next one so the value differs from any earlier request.
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    moment = utc_now()
    patch = {"metadata": {"annotations": {VERIFY_ANNOTATION: moment}}}

    def annotate(name: str) -> None:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, BENCH_NS, PLURAL, name, patch, _content_type=MERGE_PATCH
        )
        clock.client_wrote()

    before = request_totals(cp)
    served_before = server.requests
    clock.start()
    futures = run_all(pool, annotate, names(n))
    figures.reverify.lists = poll_until(
        api,
        BENCH_NS,
        n,
        lambda obj: requested_at(obj) == moment,
        futures,
        operator,
        timeout,
        f"status.verification.requestedAt={moment}",
        figures.poll_interval,
    )
    clock.stop()
    settle(cp)
    own = Counter({("connections", "PATCH"): n})
    figures.reverify.writes = Writes.of(diff(request_totals(cp), before), own)
    figures.reverify.server_requests = server.requests - served_before
    memory = operator.memory_kib()
    figures.rss_end_kib = memory.get("VmRSS", 0)
    figures.peak_rss_kib = memory.get("VmHWM", 0)
    figures.operator_log_lines = operator.log_lines()
    figures.list_cost = measure_list_cost(cp, api)
    figures.connector_connections = cp.kubectl(
        "get", "clusterconnector", "http-api", "-o", "jsonpath={.status.connections}"
    ).stdout.strip()


# --- report -----------------------------------------------------------------------------------


def _per(value: int, n: int) -> str:
    return f"{value / n:.2f}"


def _writes_rows(label: str, writes: Writes, n: int) -> list[tuple[str, str]]:
    rows = [(f"{label} writes/connection", _per(writes.tracked(), n))]
    for resource in TRACKED:
        verbs = ", ".join(
            f"{verb} {_per(value, n)}"
            for (res, verb), value in sorted(writes.by_verb.items())
            if res == resource and value
        )
        rows.append(
            (
                f"  {resource}",
                f"{_per(writes.by_resource[resource], n)}" + (f"  ({verbs})" if verbs else ""),
            )
        )
    other = {r: v for r, v in writes.by_resource.items() if r not in TRACKED and v}
    if other:
        rows.append(
            ("  other writes (totals)", ", ".join(f"{r} {v}" for r, v in sorted(other.items())))
        )
    if writes.failed:
        rows.append(
            (
                "  failed writes (totals)",
                ", ".join(f"{r} {v} {c}: {k}" for (r, v, c), k in sorted(writes.failed.items())),
            )
        )
    gets = ", ".join(f"{r} {_per(v, n)}" for r, v in sorted(writes.reads.items()) if r in TRACKED)
    if gets:
        rows.append((f"{label} GETs/connection (any client)", gets))
    return rows


def _cpu_row(label: str, round_: Round) -> tuple[str, str]:
    """CPU seconds per process, and how busy all cores were over the round's wall time."""
    if not round_.cpu or not round_.seconds:
        return (f"{label} CPU seconds", "-")
    short = {"kube-apiserver": "apiserver", "kube-controller-manager": "kcm"}
    parts = ", ".join(f"{short.get(k, k)} {v:.1f}" for k, v in round_.cpu.items())
    busy = sum(round_.cpu.values()) / (round_.seconds * (os.cpu_count() or 1))
    return (f"{label} CPU seconds", f"{parts}  (all cores {busy:.0%} busy)")


def report(figures: Figures) -> str:
    n = figures.count
    mib = 1024.0
    floor, op, rev = figures.floor, figures.operator, figures.reverify
    rows: list[tuple[str, str]] = [
        ("N (Connections)", str(n)),
        ("client concurrency", str(figures.concurrency)),
        ("poll interval (s)", f"{figures.poll_interval:g}"),
        ("admission webhooks", "on" if figures.webhooks else "off"),
        ("floor seconds (create + status patch)", f"{floor.seconds:.2f}"),
    ]
    if floor.writes is not None:
        rows.append(("floor writes/connection", _per(floor.writes.tracked(), n)))
    rows += [
        _cpu_row("floor", floor),
        ("operator seconds (create -> all Ready)", f"{op.seconds:.2f}"),
        ("  of which the client's N creates", f"{op.client_seconds:.2f}"),
        ("ratio operator/floor", f"{op.seconds / floor.seconds:.1f}x" if floor.seconds else "-"),
        _cpu_row("operator round", op),
        ("operator round LIST polls", str(op.lists)),
    ]
    if op.writes is not None:
        rows += _writes_rows("operator", op.writes, n)
    rows += [
        ("HTTP server requests (operator round)", str(op.server_requests)),
        ("operator RSS when all Ready (MiB)", f"{figures.rss_after_ready_kib / mib:.1f}"),
        ("re-verification seconds (annotate -> all)", f"{rev.seconds:.2f}"),
        ("  of which the client's N annotations", f"{rev.client_seconds:.2f}"),
        _cpu_row("re-verification", rev),
        ("re-verification LIST polls", str(rev.lists)),
    ]
    if rev.writes is not None:
        rows += _writes_rows("re-verification", rev.writes, n)
    rows += [
        ("HTTP server requests (re-verification)", str(rev.server_requests)),
        ("operator RSS at end (MiB)", f"{figures.rss_end_kib / mib:.1f}"),
        ("operator peak RSS (MiB)", f"{figures.peak_rss_kib / mib:.1f}"),
        ("operator log lines (WARNING and above)", str(figures.operator_log_lines)),
        ("ClusterConnector status.connections", figures.connector_connections or "-"),
    ]
    if figures.list_cost is not None:
        cost = figures.list_cost
        rows.append(
            (
                f"one LIST poll of {n} (idle)",
                f"{cost.seconds * 1000:.0f} ms wall, apiserver CPU {cost.apiserver_cpu * 1000:.0f}"
                f" ms, bench CPU {cost.bench_cpu * 1000:.0f} ms",
            )
        )
        rows.append(
            (
                "Connection size (JSON bytes, with status)",
                str(cost.object_bytes),
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --- main -------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="patchbay-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    figures = Figures(
        count=args.count,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        webhooks=args.webhooks,
    )
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.workdir))
        print(f"starting the control plane in {work} ...", file=sys.stderr)
        cp = localcluster.start_control_plane(work / "cluster")
        stack.callback(cp.stop)
        setup_cluster(cp)

        server = TokenServer(TOKEN)
        server.start()
        stack.callback(server.stop)

        api = custom_objects(cp.kubeconfig, args.concurrency + 4)
        pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="bench")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)

        print(f"floor: {args.count} creates + status patches ...", file=sys.stderr)
        measure_floor(cp, api, pool, figures, server.base_url)

        serving = localwebhooks.serving(work / "webhook") if args.webhooks else None
        operator = Operator(
            cp, work / "operator.log", BENCH_NS, *(serving.operator_args() if serving else ())
        )
        stack.callback(operator.stop)
        wait_operator_ready(cp, operator, 60.0)
        if serving is not None:
            stack.callback(
                localwebhooks.unregister, cp, localwebhooks.register(cp, serving, BENCH_NS)
            )
            localwebhooks.wait_effective(cp, BENCH_NS)
        print(f"operator: {args.count} Connections ...", file=sys.stderr)
        measure_operator(cp, api, pool, figures, server, operator, args.timeout)
        print("re-verification ...", file=sys.stderr)
        measure_reverify(cp, api, pool, figures, server, operator, args.timeout)
        print(report(figures))
        if args.workdir is not None:
            print(f"operator log: {operator.log_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50, help="Connections (default: %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="client threads (default: %(default)s)"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="seconds between LIST polls (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="limit per round in seconds")
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="serve and register the admission webhooks (labels are then set at admission)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep cluster state and operator.log here (default: a temp dir, removed)",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or args.poll_interval <= 0:
        parser.error("--count, --concurrency and --poll-interval must be positive")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    except (BenchError, localcluster.ControlPlaneError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
