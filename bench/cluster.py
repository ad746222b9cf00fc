"""The control plane's contents and the operator process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kubeapi import NAMESPACES_PATH, Api, BenchError, cluster_connector_path, secrets_path
from manifests import CONNECTOR, token_secret

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))

import localcluster as localcluster  # noqa: E402
import localwebhooks as localwebhooks  # noqa: E402
from localserver import stop_process  # noqa: E402

T = TypeVar("T")


class Operator:
    """``patchbay run`` in a subprocess, its JSON log in a file."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, namespaces: Iterable[str], *extra: str
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        scope = [arg for namespace in namespaces for arg in ("-n", namespace)]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "patchbay.cli",
                "run",
                *scope,
                "--log-format",
                "json",
                "--log-level",
                "WARNING",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            cwd=REPO_ROOT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

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


def run_all(
    pool: ThreadPoolExecutor, fn: Callable[[T], None], items: Iterable[T]
) -> list[Future[None]]:
    return [pool.submit(fn, item) for item in items]


def raise_failures(futures: Iterable[Future[None]]) -> None:
    for future in futures:
        if future.done() and not future.cancelled():
            exc = future.exception()
            if exc is not None:
                raise BenchError(f"a benchmark request failed: {exc}") from exc


def wait_all(futures: Iterable[Future[None]]) -> None:
    for future in futures:
        future.result()
    raise_failures(futures)


def install(cp: localcluster.ControlPlane) -> None:
    localcluster.install_crds(cp, REPO_ROOT / "crds")
    cp.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))


def create_namespace(api: Api, name: str) -> None:
    api.request(
        "POST",
        NAMESPACES_PATH,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )


def create_secrets(api: Api, pool: ThreadPoolExecutor, namespace: str, names: list[str]) -> None:
    def create(name: str) -> None:
        api.request("POST", secrets_path(namespace), token_secret(name))

    wait_all(run_all(pool, create, names))


def connector(api: Api) -> dict[str, Any]:
    return api.get(cluster_connector_path(CONNECTOR))


def connector_connections(api: Api) -> int | None:
    value = (connector(api).get("status") or {}).get("connections")
    return value if isinstance(value, int) else None


def wait_operator_ready(api: Api, operator: Operator, timeout: float) -> None:
    """The operator writes the ClusterConnector's status once its watches run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operator.check_alive()
        conditions = (connector(api).get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") for c in conditions):
            return
        time.sleep(0.25)
    raise BenchError(f"the operator did not report the ClusterConnector within {timeout:.0f}s")
