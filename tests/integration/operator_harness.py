"""Runs the real operator (`patchbay run`) against the test control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import localcluster


class OperatorProcess:
    """`patchbay run` in a subprocess, its JSON log captured to a file and its
    metrics served on a free loopback port.

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
        self.metrics_port = localcluster.free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or cp.kubeconfig)}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "patchbay.cli",
                "run",
                "--log-format",
                "json",
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample the metrics endpoint serves now, keyed by name and labels."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())
            except ConnectionRefusedError:
                return None  # still starting
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, ConnectionRefusedError):
                    return None
                raise

        text: str = wait_for(scrape, "the metrics endpoint")
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

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
