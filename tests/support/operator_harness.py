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

import yaml
from prometheus_client.parser import text_string_to_metric_families

import localcluster
from localserver import free_port, stop_process

Manifest = dict[str, Any]


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
        self.metrics_port = free_port()
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
        stop_process(self.process)
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
    """The Connection once its Ready condition carries the given reason (a suspended
    Connection has no Ready condition: its status.reason says Suspended)."""

    seen: list[Any] = []

    def probe() -> dict[str, Any] | None:
        obj = get_json(cp, "connection", name, "-n", namespace)
        seen[:] = [obj.get("status")]
        status = obj.get("status") or {}
        said = (
            status.get("reason")
            if status.get("phase") == "Suspended"
            else condition(obj, "Ready").get("reason")
        )
        return obj if said == reason else None

    try:
        result: dict[str, Any] = wait_for(
            probe, f"{namespace}/{name} Ready reason {reason}", timeout
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {seen}") from None
    return result


def apply(cp: localcluster.ControlPlane, namespace: str, *objects: Manifest) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def events_for(cp: localcluster.ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(cp, "events", "-n", namespace)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def wait_for_single_failed_login(
    cp: localcluster.ControlPlane, namespace: str, name: str, attempts: Callable[[], int]
) -> dict[str, Any]:
    """The Connection once it failed for good on its credentials, after checking that the
    operator tried them once (``attempts`` counts the tries the server saw) and not again."""
    obj = wait_for_reason(cp, namespace, name, "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"
    time.sleep(8)  # a retrying operator would have tried again within its first backoff steps
    assert attempts() == 1
    return obj


def binding_type(cp: localcluster.ControlPlane, namespace: str, name: str) -> str:
    """The type of the binding Secret of Connection ``name`` (servicebinding.io/<kind>)."""
    return cp.kubectl(
        "get", "secret", f"{name}-binding", "-n", namespace, "-o", "jsonpath={.type}"
    ).stdout


def wait_for_binding_deleted(cp: localcluster.ControlPlane, namespace: str, name: str) -> None:
    """Wait until the garbage collector has removed the binding Secret of Connection ``name``."""

    def binding_gone() -> bool:
        result = cp.kubectl("get", "secret", f"{name}-binding", "-n", namespace, check=False)
        return "NotFound" in result.stderr

    wait_for(binding_gone, "the garbage collector to delete the binding Secret")


# --- manifests ----------------------------------------------------------------------------


def secret_manifest(name: str, *, allowed: str | None = "*", **values: str) -> Manifest:
    """A Secret; by default it allows every Connection of its namespace to use it, as
    the operator requires where no admission webhook records an author's access."""
    metadata: dict[str, Any] = {"name": name}
    if allowed is not None:
        metadata["annotations"] = {"patchbay.dev/allowed-connections": allowed}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": values}


def credentials_secret(connection: str, **values: str) -> Manifest:
    """The Secret `<connection>-credentials` a Connection named ``connection`` reads."""
    return secret_manifest(f"{connection}-credentials", **values)


def connection_manifest(
    name: str,
    connector_ref: dict[str, str],
    config: dict[str, Any],
    secret: str | None = None,
    **spec: Any,
) -> Manifest:
    """A Connection; its credentials come from the Secret named ``secret``, if any."""
    credentials = {"credentials": {"secretRef": {"name": secret}}} if secret is not None else {}
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {"connectorRef": connector_ref, "config": config, **credentials, **spec},
    }


def token_secret(name: str, token: str) -> Manifest:
    return secret_manifest(name, token=token)


def http_connection(
    name: str,
    base_url: str,
    secret: str | None = "api-token",
    *,
    connector: str | None = None,
    **spec: Any,
) -> Manifest:
    """A Connection on the http-api ClusterConnector, or on the namespaced ``connector``."""
    ref = (
        {"kind": "Connector", "name": connector}
        if connector is not None
        else {"kind": "ClusterConnector", "name": "http-api"}
    )
    return connection_manifest(name, ref, {"baseUrl": base_url}, secret, **spec)


def apply_http_connection(
    cp: localcluster.ControlPlane,
    namespace: str,
    name: str,
    base_url: str,
    token: str,
    secret: str = "api-token",
    **spec: Any,
) -> None:
    """An http Connection ``name`` to ``base_url`` and its Secret holding ``token``."""
    apply(
        cp, namespace, token_secret(secret, token), http_connection(name, base_url, secret, **spec)
    )
