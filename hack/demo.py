"""`make demo`: a local control plane, a local PostgreSQL, the operator and two Connections.

Starts everything on loopback, applies one Connection with the right
password and one with a wrong one, prints `kubectl get connections`, and
keeps running (operator logs on stderr) until Ctrl-C, which stops it all.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# the local control plane and PostgreSQL of the test suite
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
import localcluster
import localpostgres
from localserver import stop_process

REPO = Path(__file__).resolve().parent.parent


def _connection(name: str, port: int, secret: str) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{name}-credentials",
                # the demo runs without admission webhooks: the Secret allows its Connection
                "annotations": {"patchbay.dev/allowed-connections": name},
            },
            "stringData": {"password": secret},
        },
        {
            "apiVersion": "patchbay.dev/v1alpha1",
            "kind": "Connection",
            "metadata": {"name": name},
            "spec": {
                "connectorRef": {"kind": "ClusterConnector", "name": "postgres"},
                "config": {
                    "host": "127.0.0.1",
                    "port": port,
                    "database": "orders",
                    "username": "app",
                    "sslmode": "disable",
                },
                "credentials": {"secretRef": {"name": f"{name}-credentials"}},
            },
        },
    ]


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="patchbay-demo-"))
    print("starting the local control plane ...", file=sys.stderr)
    cp = localcluster.start_control_plane(workdir / "cluster")
    postgres: localpostgres.PostgresServer | None = None
    operator: subprocess.Popen[bytes] | None = None
    try:
        localcluster.install_crds(cp, REPO / "crds")
        cp.kubectl("apply", "-f", str(REPO / "deploy" / "connectors"))
        print("starting PostgreSQL on 127.0.0.1 ...", file=sys.stderr)
        postgres = localpostgres.start_postgres(workdir / "postgres")
        password = secrets.token_urlsafe(16)
        localpostgres.execute(postgres, f"create role app login password '{password}'")
        localpostgres.execute(postgres, "create database orders owner app")
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
        # its own session: Ctrl-C reaches only this script, which then stops it once
        operator = subprocess.Popen(
            [sys.executable, "-m", "patchbay.cli", "run", "--log-format", "text"],
            env=env,
            start_new_session=True,
        )
        manifests = _connection("orders-db", postgres.port, password) + _connection(
            "orders-db-wrong-password", postgres.port, "not-the-password"
        )
        cp.kubectl("apply", "-n", "default", "-f", "-", input=yaml.safe_dump_all(manifests))
        for _ in range(60):
            table = cp.kubectl("get", "connections", "-n", "default").stdout
            if "Verified" in table and "AuthenticationFailed" in table:
                break
            time.sleep(1)
        print(f"\n{table}", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}   # to look around; Ctrl-C stops everything\n")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if operator is not None:
            stop_process(operator)
        if postgres is not None:
            postgres.stop()
        cp.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    raise SystemExit(main())
