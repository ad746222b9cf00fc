"""The operator verifies Connections on the mysql ClusterConnector against a real MariaDB server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import localcluster
import localmariadb
from tests.conftest import REPO_ROOT
from tests.integration.operator_harness import OperatorProcess, wait_for_reason
from tests.integration.test_operator_http import apply
from tests.integration.test_operator_postgres import password_secret

PASSWORD = f"mysql-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def shop_db(mariadb: localmariadb.MariadbServer) -> localmariadb.MariadbServer:
    localmariadb.execute(mariadb, "create database shop")
    localmariadb.execute(mariadb, f"create user shopper identified by '{PASSWORD}'")
    localmariadb.execute(mariadb, "grant select on shop.* to shopper")
    return mariadb


@pytest.fixture
def operator(
    control_plane: localcluster.ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    process = OperatorProcess(control_plane, tmp_path / "operator.log", "-n", namespace)
    yield process
    process.stop()


def mysql_connection(name: str, port: int, username: str = "shopper") -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {
            "connectorRef": {"name": "mysql"},
            "config": {
                "host": "127.0.0.1",
                "port": port,
                "database": "shop",
                "username": username,
                "sslmode": "DISABLED",
            },
            "credentials": {"secretRef": {"name": f"{name}-credentials"}},
            "verification": {"checks": [{"type": "table", "table": "information_schema.tables"}]},
        },
    }


def test_good_password_is_ready_with_the_mariadb_version_and_a_binding(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    shop_db: localmariadb.MariadbServer,
) -> None:
    apply(
        control_plane,
        namespace,
        password_secret("shop", PASSWORD),
        mysql_connection("shop", shop_db.port),
    )
    obj = wait_for_reason(control_plane, namespace, "shop", "Verified")
    assert obj["status"]["phase"] == "Ready"
    verification = obj["status"]["verification"]
    assert verification["details"]["serverVersion"].startswith("MariaDB ")
    assert [c["result"] for c in verification["checks"]] == ["Succeeded"]
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "mysql"
    binding = control_plane.kubectl(
        "get", "secret", "shop-binding", "-n", namespace, "-o", "jsonpath={.type}"
    ).stdout
    assert binding == "servicebinding.io/mysql"
    assert PASSWORD not in operator.logs()


def test_wrong_password_is_authentication_failed_after_one_login(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    shop_db: localmariadb.MariadbServer,
) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    localmariadb.execute(shop_db, f"create user {user} identified by 'right-password'")
    localmariadb.execute(shop_db, f"grant select on shop.* to {user}")
    apply(
        control_plane,
        namespace,
        password_secret("wrongpw", "wrong-password"),
        mysql_connection("wrongpw", shop_db.port, username=user),
    )
    obj = wait_for_reason(control_plane, namespace, "wrongpw", "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["verification"]["error"]["retryable"] is False
    time.sleep(8)  # a retrying operator would have tried again within its first backoff steps
    assert shop_db.login_attempts(user) == 1
