"""What one run measured, as a table and as JSON."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import TRACKED, Round, Writes

MIB = 1024.0


@dataclass
class Memory:
    """Operator VmRSS at moments of the run, VmHWM (peak) after round 2 and at the end, KiB."""

    ready_kib: int = 0  # all N Ready after the first round
    round1_kib: int = 0  # end of re-verification round 1
    round2_kib: int = 0  # end of re-verification round 2
    peak_round2_kib: int = 0  # VmHWM at the end of round 2
    end_kib: int = 0  # after every scenario
    peak_end_kib: int = 0


@dataclass
class ConnectorCount:
    """The http-api ClusterConnector's status.connections against the true number."""

    expected: int = 0
    first_read: int | None = None  # read right after the round's condition was met
    first_read_seconds: float = 0.0  # when, after the last create
    final: int | None = None
    exact_after_seconds: float | None = None  # after the last create; None: not within limit


@dataclass
class Rotation:
    """K Secrets of single Connections, each rotated to a wrong token in turn."""

    secrets: int = 0
    seconds: list[float] = field(default_factory=list)  # update -> AuthenticationFailed
    timed_out: int = 0
    restore_seconds: float | None = None  # all K restored -> all K Ready again
    skipped: str = ""


@dataclass
class SharedRotation:
    """M Connections sharing one Secret in their own namespace, the Secret rotated."""

    count: int = 0
    ready: Round = field(default_factory=Round)  # M created -> all Ready
    rotation: Round = field(default_factory=Round)  # Secret updated -> all AuthenticationFailed
    first_seconds: float = 0.0  # Secret updated -> the first AuthenticationFailed
    half_seconds: float = 0.0  # -> half of them
    restore_seconds: float | None = None  # Secret restored -> all Ready
    floor_status_seconds: float = 0.0  # bare client: M status patches
    floor_writes_seconds: float = 0.0  # bare client: M x (status, binding Secret, Event)


@dataclass
class BlackHoleRound:
    """N more Connections, every tenth pointing at a listener that never answers."""

    count: int = 0
    blackholed: int = 0
    healthy: int = 0
    timeout_seconds: int = 0
    baseline: Round = field(default_factory=Round)  # the healthy number alone -> all Ready
    mixed: Round = field(default_factory=Round)  # all created -> the healthy ones Ready
    blackholed_seconds: float | None = None  # -> every black-holed one Ready=False
    blackholed_reported: int = 0  # black-holed ones Ready=False when the bounded wait ended
    blackholed_waited_seconds: float = 0.0
    blackholed_reasons: dict[str, int] = field(default_factory=dict)
    first_round_scaled_seconds: float = 0.0  # first round's time x healthy/N
    accepted: int = 0  # connections the black hole accepted
    most_open: int = 0  # connections it held at once


@dataclass
class Environment:
    """Where and when the run was made; a busy machine explains slow figures."""

    started: str = ""  # UTC
    cpus: int = 0
    python: str = ""
    load_average_start: list[float] = field(default_factory=list)  # 1, 5, 15 min
    load_average_end: list[float] = field(default_factory=list)

    @classmethod
    def now(cls) -> Environment:
        return cls(
            started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            cpus=os.cpu_count() or 0,
            python=platform.python_version(),
            load_average_start=[round(x, 2) for x in os.getloadavg()],
        )


@dataclass
class Figures:
    count: int
    secrets: int
    concurrency: int
    webhooks: bool = False
    setup_secrets_seconds: float = 0.0
    floor: Round = field(default_factory=Round)  # N creates + N status patches
    floor2: Round = field(default_factory=Round)  # the design's writes per Connection
    operator: Round = field(default_factory=Round)  # N creates -> all Ready
    operator_90_seconds: float = 0.0  # -> 90% Ready
    reverify: list[Round] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    connector: ConnectorCount = field(default_factory=ConnectorCount)
    connector_end: ConnectorCount = field(default_factory=ConnectorCount)
    rotation: Rotation = field(default_factory=Rotation)
    shared: SharedRotation | None = None
    blackhole: BlackHoleRound | None = None
    status_bytes_operator: int = 0
    status_bytes_floor2: int = 0
    connection_bytes: int = 0  # one Connection with its status, JSON
    operator_log_lines: int = 0
    failure: str = ""  # why the run stopped early; the figures before it stand
    environment: Environment = field(default_factory=Environment.now)

    def derived(self) -> dict[str, Any]:
        """The ratios and per-verification figures the report states."""
        op = self.operator.seconds
        found: dict[str, Any] = {
            "ratio_operator_floor": _ratio(op, self.floor.seconds),
            "ratio_operator_floor2": _ratio(op, self.floor2.seconds),
            "operator_cpu_ms_per_verification": [
                _cpu_per_verification(r) for r in [self.operator, *self.reverify]
            ],
            "rss_round2_minus_round1_mib": round(
                (self.memory.round2_kib - self.memory.round1_kib) / MIB, 1
            )
            if self.memory.round2_kib
            else None,
        }
        seconds = self.rotation.seconds
        if seconds:
            found["rotation_p50_seconds"] = round(_percentile(seconds, 50), 3)
            found["rotation_p95_seconds"] = round(_percentile(seconds, 95), 3)
            found["rotation_max_seconds"] = round(max(seconds), 3)
        if self.shared is not None:
            found["ratio_shared_rotation_floor_status"] = _ratio(
                self.shared.rotation.seconds, self.shared.floor_status_seconds
            )
            found["ratio_shared_rotation_floor_writes"] = _ratio(
                self.shared.rotation.seconds, self.shared.floor_writes_seconds
            )
        if self.blackhole is not None:
            found["ratio_blackhole_mixed_baseline"] = _ratio(
                self.blackhole.mixed.seconds, self.blackhole.baseline.seconds
            )
            found["ratio_blackhole_mixed_first_round_scaled"] = _ratio(
                self.blackhole.mixed.seconds, self.blackhole.first_round_scaled_seconds
            )
        return found

    def write_json(self, path: Path) -> None:
        data = {"figures": dataclasses.asdict(self), "derived": self.derived()}
        path.write_text(json.dumps(data, indent=2) + "\n")


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base > 0 and value > 0 else None


def _cpu_per_verification(round_: Round) -> float | None:
    operator = round_.cpu.get("operator")
    if operator is None or not round_.server_requests:
        return None
    return round(operator * 1000 / round_.server_requests, 2)


def _percentile(values: list[float], pct: int) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))
    return ordered[rank - 1]


# --- the table --------------------------------------------------------------------------------

Row = tuple[str, str]


def _per(value: int, n: int) -> str:
    return f"{value / n:.2f}" if n else "-"


def _x(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def _s(seconds: float | None) -> str:
    return f"{seconds:.2f}" if seconds is not None else "-"


def _mib(kib: int) -> str:
    return f"{kib / MIB:.1f}" if kib else "-"


def _writes_rows(label: str, writes: Writes | None, n: int) -> list[Row]:
    if writes is None:
        return []
    rows = [(f"{label} writes/connection", _per(writes.tracked(), n))]
    for resource in TRACKED:
        verbs = ", ".join(
            f"{key.split(' ')[1]} {_per(value, n)}"
            for key, value in writes.by_verb.items()
            if key.split(" ")[0] == resource and value
        )
        value = writes.by_resource.get(resource, 0)
        rows.append((f"  {resource}", _per(value, n) + (f"  ({verbs})" if verbs else "")))
    other = {r: v for r, v in writes.by_resource.items() if r not in TRACKED and v}
    if other:
        rows.append(("  other writes (totals)", ", ".join(f"{r} {v}" for r, v in other.items())))
    if writes.failed:
        rows.append(
            ("  failed writes (totals)", ", ".join(f"{k}: {v}" for k, v in writes.failed.items()))
        )
    gets = ", ".join(f"{r} {_per(v, n)}" for r, v in writes.reads.items() if r in TRACKED)
    if gets:
        rows.append((f"{label} GETs/connection (any client)", gets))
    return rows


def _cpu_row(label: str, round_: Round) -> Row:
    """CPU seconds per process, and how busy all cores were over the round's wall time."""
    if not round_.cpu or not round_.seconds:
        return (f"{label} CPU seconds", "-")
    short = {"kube-apiserver": "apiserver", "kube-controller-manager": "kcm"}
    parts = ", ".join(f"{short.get(k, k)} {v:.1f}" for k, v in round_.cpu.items())
    busy = sum(round_.cpu.values()) / (round_.seconds * (os.cpu_count() or 1))
    return (f"{label} CPU seconds", f"{parts}  (all cores {busy:.0%} busy)")


def _verification_rows(label: str, round_: Round) -> list[Row]:
    per = _cpu_per_verification(round_)
    return [
        (f"{label} token API requests", str(round_.server_requests)),
        (f"{label} operator CPU/verification (ms)", f"{per:.2f}" if per is not None else "-"),
    ]


def _connector_row(label: str, count: ConnectorCount) -> Row:
    first = "-" if count.first_read is None else str(count.first_read)
    seen = f"{first} of {count.expected} {count.first_read_seconds:.2f} s after the last create"
    if count.exact_after_seconds is None:
        return (label, f"{seen}; not exact within the wait (last {count.final})")
    if count.first_read == count.expected:
        return (label, f"{seen} (exact at the first read)")
    return (label, f"{seen}; exact {count.exact_after_seconds:.2f} s after the last create")


def _rotation_rows(rotation: Rotation) -> list[Row]:
    if rotation.skipped:
        return [("rotation, one Secret", f"skipped: {rotation.skipped}")]
    seconds = rotation.seconds
    rows: list[Row] = [("rotation, one Secret: Secrets rotated", str(rotation.secrets))]
    if seconds:
        rows.append(
            (
                "  update -> AuthenticationFailed p50/p95/max (s)",
                f"{_percentile(seconds, 50):.2f} / {_percentile(seconds, 95):.2f} / "
                f"{max(seconds):.2f}",
            )
        )
    if rotation.timed_out:
        rows.append(("  not re-verified within the wait", str(rotation.timed_out)))
    rows.append(("  restored -> all K Ready again (s)", _s(rotation.restore_seconds)))
    return rows


def _shared_rows(shared: SharedRotation) -> list[Row]:
    m = shared.count
    rotation = shared.rotation
    return [
        (f"shared Secret: {m} Connections created -> Ready (s)", _s(shared.ready.seconds)),
        ("  rotated -> all AuthenticationFailed (s)", _s(rotation.seconds)),
        (
            "  ... the first one / half of them (s)",
            f"{shared.first_seconds:.2f} / {shared.half_seconds:.2f}",
        ),
        *_writes_rows("  rotation", rotation.writes, m),
        _cpu_row("  rotation", rotation),
        (f"  bare client: {m} status patches (s)", _s(shared.floor_status_seconds)),
        (
            f"  bare client: {m} x (status, binding, Event) (s)",
            _s(shared.floor_writes_seconds),
        ),
        (
            "  ratio rotation/bare client (status; all writes)",
            f"{_x(_ratio(rotation.seconds, shared.floor_status_seconds))}; "
            f"{_x(_ratio(rotation.seconds, shared.floor_writes_seconds))}",
        ),
        ("  restored -> all Ready (s)", _s(shared.restore_seconds)),
    ]


def _blackhole_rows(bh: BlackHoleRound) -> list[Row]:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(bh.blackholed_reasons.items())) or "-"
    return [
        (
            "black hole: Connections (black-holed / healthy)",
            f"{bh.count} ({bh.blackholed} / {bh.healthy}), timeout {bh.timeout_seconds}s",
        ),
        (f"  {bh.healthy} healthy alone -> all Ready (s)", _s(bh.baseline.seconds)),
        (f"  mixed: {bh.healthy} healthy -> all Ready (s)", _s(bh.mixed.seconds)),
        ("  of which the client's creates", _s(bh.mixed.client_seconds)),
        ("  ratio mixed/alone", _x(_ratio(bh.mixed.seconds, bh.baseline.seconds))),
        (
            "  first round scaled to the healthy number (s)",
            f"{bh.first_round_scaled_seconds:.2f}  "
            f"(ratio {_x(_ratio(bh.mixed.seconds, bh.first_round_scaled_seconds))})",
        ),
        (
            "  black-holed -> all Ready=False (s)",
            _s(bh.blackholed_seconds)
            if bh.blackholed_seconds is not None
            else f"- ({bh.blackholed_reported} of {bh.blackholed} after "
            f"{bh.blackholed_waited_seconds:.0f} s)",
        ),
        ("  black-holed Ready reasons", reasons),
        ("  black hole connections accepted (most at once)", f"{bh.accepted} ({bh.most_open})"),
        _cpu_row("  mixed", bh.mixed),
    ]


def report(f: Figures) -> str:
    n = f.count
    op = f.operator
    mem = f.memory
    env = f.environment
    load = " / ".join(
        ", ".join(f"{x:.1f}" for x in loads) or "-"
        for loads in (env.load_average_start, env.load_average_end)
    )
    rows: list[Row] = [
        ("started (UTC), cores, Python", f"{env.started}, {env.cpus}, {env.python}"),
        ("load average 1/5/15 min at start / end", load),
        ("N (Connections)", str(n)),
        ("Secrets in the bench namespace", str(f.secrets)),
        ("client concurrency", str(f.concurrency)),
        ("admission webhooks", "on" if f.webhooks else "off"),
        (f"setup: {f.secrets} Secrets created (s)", f"{f.setup_secrets_seconds:.2f}"),
        ("floor 1 seconds (create + status patch)", f"{f.floor.seconds:.2f}"),
    ]
    if f.floor.writes is not None:
        rows.append(("floor 1 writes/connection", _per(f.floor.writes.tracked(), n)))
    rows += [
        _cpu_row("floor 1", f.floor),
        ("floor 2 seconds (create, binding, status, Event)", f"{f.floor2.seconds:.2f}"),
    ]
    if f.floor2.writes is not None:
        rows.append(("floor 2 writes/connection", _per(f.floor2.writes.tracked(), n)))
    rows += [
        _cpu_row("floor 2", f.floor2),
        (
            "status bytes (floor 2 / operator)",
            f"{f.status_bytes_floor2} / {f.status_bytes_operator}",
        ),
        ("operator seconds (create -> all Ready)", f"{op.seconds:.2f}"),
        ("  of which the client's N creates", f"{op.client_seconds:.2f}"),
        ("  create -> 90% Ready", f"{f.operator_90_seconds:.2f}"),
        ("ratio operator/floor 1", _x(_ratio(op.seconds, f.floor.seconds))),
        ("ratio operator/floor 2 (target <= 1.3x)", _x(_ratio(op.seconds, f.floor2.seconds))),
        _cpu_row("operator round", op),
        *_writes_rows("operator", op.writes, n),
        *_verification_rows("operator round", op),
        ("operator RSS when all Ready (MiB)", _mib(mem.ready_kib)),
        _connector_row("ClusterConnector status.connections", f.connector),
    ]
    for i, round_ in enumerate(f.reverify, start=1):
        label = f"re-verification {i}"
        rows += [
            (f"{label} seconds (annotate -> all)", f"{round_.seconds:.2f}"),
            ("  of which the client's N annotations", f"{round_.client_seconds:.2f}"),
            _cpu_row(label, round_),
            *_writes_rows(label, round_.writes, n),
            *_verification_rows(label, round_),
            (
                f"operator RSS after round {i} (MiB)",
                _mib(mem.round1_kib if i == 1 else mem.round2_kib),
            ),
        ]
    if mem.round1_kib and mem.round2_kib:
        rows.append(
            (
                "RSS round 2 - round 1 (MiB, flat between rounds)",
                f"{(mem.round2_kib - mem.round1_kib) / MIB:+.1f}",
            )
        )
    rows.append(("operator peak RSS after round 2 (MiB)", _mib(mem.peak_round2_kib)))
    rows += _rotation_rows(f.rotation)
    if f.shared is not None:
        rows += _shared_rows(f.shared)
    if f.blackhole is not None:
        rows += _blackhole_rows(f.blackhole)
    rows += [
        ("operator RSS / peak at end (MiB)", f"{_mib(mem.end_kib)} / {_mib(mem.peak_end_kib)}"),
        _connector_row("ClusterConnector status.connections at end", f.connector_end),
        ("operator log lines (WARNING and above)", str(f.operator_log_lines)),
        ("Connection size (JSON bytes, with status)", str(f.connection_bytes)),
    ]
    if f.failure:
        rows.append(("FAILED (figures above stand)", f.failure.splitlines()[0][:300]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
