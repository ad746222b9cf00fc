"""The real tools' code that GitOps and monitoring setups run, built once by
hack/build-go-tools.sh: kstatus (Flux, kpt), Argo CD's Lua health checks, promtool."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def tool(name: str) -> Path:
    """The path of a tool (kstatus, argocd-health, promtool), built on first use."""
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-go-tools.sh"), name],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(result.stdout.strip())


def _run(name: str, *args: str, stdin: str) -> str:
    result = subprocess.run(
        [str(tool(name)), *args], input=stdin, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed: {result.stderr.strip()}")
    return result.stdout


def kstatus(objects: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """kstatus' (status, message) of each object, in order: Current, InProgress, Failed,
    Terminating, NotFound or Unknown, as Flux's health checks and kpt see them."""
    answer = json.loads(_run("kstatus", stdin=json.dumps({"kind": "List", "items": list(objects)})))
    return [(item["status"], item["message"]) for item in answer]


def argocd_health(script: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    """Argo CD's (status, message) for ``obj`` from a health script, run as Argo CD runs
    one configured in argocd-cm."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        answer = json.loads(_run("argocd-health", file.name, stdin=json.dumps(obj)))
    return answer["status"], answer["message"]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """promtool with ``args``; the caller reads its exit code and output."""
    return subprocess.run(
        [str(tool("promtool")), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
