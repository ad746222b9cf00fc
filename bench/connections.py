"""Benchmark: how fast, how cheaply and in how much memory the operator handles N http
Connections, against a bare client doing the same writes.

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager on 127.0.0.1),
a token HTTP API and a black hole on 127.0.0.1, and the operator, then measures

* FLOOR 1: a bare client creating N Connections and patching each one's status once,
* FLOOR 2: a bare client doing per Connection the writes the design needs (create, binding
  Secret, status, Event),
* OPERATOR: N Connections, each with its own Secret, until the operator shows all Ready,
* RE-VERIFY 1 and 2: every Connection annotated with patchbay.dev/verify-requested-at until
  every status.verification.requestedAt carries the new value; the operator's memory,
* ROTATION: single Secrets rotated to a wrong token until their Connection fails,
* SHARED: M Connections sharing one Secret, rotated, against a bare client's same writes,
* BLACK HOLE: N more Connections, every tenth pointing at a host that never answers,

and the API writes (kube-apiserver's ``apiserver_request_total``) per Connection. It reports
figures and asserts nothing about time::

    python bench/connections.py --count 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from cluster import (
    Operator,
    create_namespace,
    create_secrets,
    install,
    localcluster,
    localwebhooks,
    wait_operator_ready,
)
from figures import BlackHoleRound, Figures, SharedRotation, report
from kubeapi import Api, BenchError
from manifests import TOKEN, names
from measure import Round
from rounds import (
    Bench,
    count_connector,
    measure_floor,
    measure_floor2,
    measure_floor_failed,
    measure_operator,
    measure_reverify,
)
from scenarios import measure_blackhole, measure_rotation, measure_shared
from servers import BlackHole, LoopThread, TokenServer
from urllib3.exceptions import HTTPError

FLOOR_NS, FLOOR2_NS, BENCH_NS = "floor", "floor2", "bench"
SHARED_NS, HEALTHY_NS, BLACKHOLE_NS = "shared", "healthy", "blackhole"
MAX_TIMEOUT_SECONDS = 120  # the CRD's ceiling for spec.verification.timeout


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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _measure(
    args: argparse.Namespace,
    figures: Figures,
    bench: Bench,
    cp: localcluster.ControlPlane,
    work: Path,
    stack: contextlib.ExitStack,
    hole: BlackHole | None,
    operator_namespaces: list[str],
) -> None:
    """Every round and scenario, in order; the figures fill in as they go."""
    n = args.count
    api, pool = bench.api, bench.pool
    connections = names("conn", n)
    secrets = names("credentials", args.secrets)
    _say(f"setup: {args.secrets} Secrets ...")
    started = time.monotonic()
    create_secrets(api, pool, BENCH_NS, secrets)
    figures.setup_secrets_seconds = round(time.monotonic() - started, 3)

    _say(f"floor 1: {n} creates + status patches ...")
    measure_floor(bench, figures.floor, FLOOR_NS, connections)
    _say(f"floor 2: {n} creates, binding Secrets, statuses, Events ...")
    measure_floor2(bench, figures, FLOOR2_NS, connections)
    if args.shared_count:
        m = args.shared_count
        _say(f"bare client for the shared rotation: {m} statuses, then all its writes ...")
        figures.shared = SharedRotation(count=m)
        figures.shared.floor_status_seconds = measure_floor_failed(
            bench, FLOOR2_NS, connections[:m], 1, everything=False
        )
        figures.shared.floor_writes_seconds = measure_floor_failed(
            bench, FLOOR2_NS, connections[:m], 2, everything=True
        )

    serving = localwebhooks.serving(work / "webhook") if args.webhooks else None
    operator = Operator(
        cp.kubeconfig,
        work / "operator.log",
        operator_namespaces,
        *(serving.operator_args() if serving else ()),
    )
    stack.callback(operator.stop)
    bench.operator = operator
    wait_operator_ready(api, operator, 60.0)
    if serving is not None:
        for namespace in operator_namespaces:
            stack.callback(
                localwebhooks.unregister, cp, localwebhooks.register(cp, serving, namespace)
            )
        localwebhooks.wait_effective(cp, BENCH_NS)

    _say(f"operator: {n} Connections ...")
    measure_operator(bench, figures, BENCH_NS, connections, secrets)
    for i in (1, 2):
        _say(f"re-verification {i} ...")
        round_ = Round()
        figures.reverify.append(round_)
        measure_reverify(bench, round_, BENCH_NS, connections)
        memory = operator.memory_kib()
        if i == 1:
            figures.memory.round1_kib = memory.get("VmRSS", 0)
        else:
            figures.memory.round2_kib = memory.get("VmRSS", 0)
            figures.memory.peak_round2_kib = memory.get("VmHWM", 0)

    _say(f"rotation: up to {args.rotations} single Secrets ...")
    measure_rotation(bench, figures.rotation, BENCH_NS, connections, secrets, args.rotations)
    expected = n
    if figures.shared is not None:
        _say(f"shared Secret: {figures.shared.count} Connections ...")
        measure_shared(bench, figures.shared, SHARED_NS, figures.shared.count)
        expected += figures.shared.count
    if hole is not None:
        figures.blackhole = BlackHoleRound()
        _say(f"black hole: {args.blackhole_count} more Connections, alone and mixed ...")
        measure_blackhole(
            bench,
            figures,
            figures.blackhole,
            hole,
            HEALTHY_NS,
            BLACKHOLE_NS,
            args.blackhole_count,
            args.blackhole_timeout,
        )
        expected += figures.blackhole.healthy + figures.blackhole.count
    count_connector(bench, figures.connector_end, expected, bench.last_create)


def run(args: argparse.Namespace) -> int:
    figures = Figures(
        count=args.count,
        secrets=args.secrets,
        concurrency=args.concurrency,
        webhooks=args.webhooks,
    )
    operator_namespaces = [BENCH_NS]
    if args.shared_count:
        operator_namespaces.append(SHARED_NS)
    if args.blackhole:
        operator_namespaces += [HEALTHY_NS, BLACKHOLE_NS]

    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.workdir))
        _say(f"starting the control plane in {work} ...")
        cp = localcluster.start_control_plane(work / "cluster")
        stack.callback(cp.stop)
        install(cp)

        loop = LoopThread()
        stack.callback(loop.stop)
        token = TokenServer(loop, TOKEN)
        stack.callback(token.stop)
        hole = BlackHole(loop) if args.blackhole else None
        if hole is not None:
            stack.callback(hole.stop)

        api = Api(cp.kubeconfig, args.concurrency + 4)
        pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="bench")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        bench = Bench(api, pool, token, dict(cp.pids), args.timeout)
        bench.stall = args.stall_timeout or None

        for namespace in (FLOOR_NS, FLOOR2_NS, *operator_namespaces):
            create_namespace(api, namespace)
            if namespace != BENCH_NS:
                create_secrets(api, pool, namespace, ["api-token"])
        try:
            _measure(args, figures, bench, cp, work, stack, hole, operator_namespaces)
        except (BenchError, HTTPError, subprocess.CalledProcessError, TimeoutError) as exc:
            # Report what was measured before the failure, then fail.
            figures.failure = str(exc)
        operator = bench.operator
        if operator is not None and operator.process.poll() is None:
            memory = operator.memory_kib()
            figures.memory.end_kib = memory.get("VmRSS", 0)
            figures.memory.peak_end_kib = memory.get("VmHWM", 0)
        if operator is not None:
            figures.operator_log_lines = operator.log_lines()
        figures.environment.load_average_end = [round(x, 2) for x in os.getloadavg()]
        print(report(figures), flush=True)
        if args.json is not None:
            figures.write_json(args.json)
            _say(f"figures written to {args.json}")
        if operator is not None and args.workdir is not None:
            _say(f"operator log: {operator.log_path}")
        if figures.failure:
            _say(f"benchmark failed: {figures.failure}")
            return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50, help="Connections (default: %(default)s)")
    parser.add_argument(
        "--secrets",
        type=int,
        help="Secrets in the bench namespace; Connection i uses Secret i mod this "
        "(default: --count, one Secret per Connection)",
    )
    parser.add_argument(
        "--shared-secret",
        action="store_true",
        help="all bench Connections use one Secret (same as --secrets 1)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="client threads (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="limit per wait in seconds (default: 900)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="give a wait up when no Connection changed for this many seconds "
        "(default: %(default)s; 0: only --timeout)",
    )
    parser.add_argument(
        "--rotations",
        type=int,
        default=20,
        help="single Secrets rotated one after another (default: %(default)s; 0: skip)",
    )
    parser.add_argument(
        "--shared-count",
        type=int,
        help="Connections sharing one rotated Secret in their own namespace "
        "(default: min(--count, 1000); 0: skip)",
    )
    parser.add_argument(
        "--blackhole",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the black-holed hosts scenario (default: on)",
    )
    parser.add_argument(
        "--blackhole-count",
        type=int,
        help="Connections of the black-hole scenario, every tenth black-holed (default: --count)",
    )
    parser.add_argument(
        "--blackhole-timeout",
        type=int,
        default=10,
        help="verification timeout of the black-holed Connections in seconds "
        f"(default: %(default)s, at most {MAX_TIMEOUT_SECONDS})",
    )
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
    parser.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or args.timeout <= 0:
        parser.error("--count, --concurrency and --timeout must be positive")
    if args.shared_secret:
        if args.secrets not in (None, 1):
            parser.error("--shared-secret and --secrets contradict each other")
        args.secrets = 1
    if args.secrets is None:
        args.secrets = args.count
    if not 1 <= args.secrets <= args.count:
        parser.error("--secrets must be between 1 and --count")
    if args.shared_count is None:
        args.shared_count = min(args.count, 1000)
    if not 0 <= args.shared_count <= args.count:
        parser.error("--shared-count must be between 0 and --count")
    if args.blackhole_count is None:
        args.blackhole_count = args.count
    if args.blackhole and args.blackhole_count < 1:
        parser.error("--blackhole-count must be positive (or use --no-blackhole)")
    if not 1 <= args.blackhole_timeout <= MAX_TIMEOUT_SECONDS:
        parser.error(f"--blackhole-timeout must be between 1 and {MAX_TIMEOUT_SECONDS}")
    if args.stall_timeout < 0:
        parser.error("--stall-timeout must not be negative")
    if args.rotations < 0:
        parser.error("--rotations must not be negative")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started ignoring it
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
