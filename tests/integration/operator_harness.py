"""Runs the real operator (`patchbay run`) against the test control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import localcluster


class OperatorProcess:
    """`patchbay run` in a subprocess, its JSON log captured to a file.

    It runs as the control plane's admin unless given another kubeconfig.
    """

    def __init__(
        self,
        cp: localcluster.ControlPlane,
        log_path: Path,
        *args: str,
        kubeconfig: Path | None = None,
    ) -> None:
        self.log_path = log_path
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or cp.kubeconfig)}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "patchbay.cli", "run", "--log-format", "json", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        # shown by pytest only when the test failed
        print("operator log tail:\n" + "\n".join(self.logs().splitlines()[-40:]))


def get_json(cp: localcluster.ControlPlane, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cp.kubectl("get", *args, "-o", "json").stdout)
    return result


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_for(
    probe: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.3
) -> Any:
    """Poll until probe returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def wait_for_reason(
    cp: localcluster.ControlPlane, namespace: str, name: str, reason: str, timeout: float = 60.0
) -> dict[str, Any]:
    """The Connection once its Ready condition carries the given reason."""

    seen: list[Any] = []

    def probe() -> dict[str, Any] | None:
        obj = get_json(cp, "connection", name, "-n", namespace)
        seen[:] = [obj.get("status")]
        return obj if condition(obj, "Ready").get("reason") == reason else None

    try:
        result: dict[str, Any] = wait_for(
            probe, f"{namespace}/{name} Ready reason {reason}", timeout
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {seen}") from None
    return result
