"""The operator verifies Connections on the mysql ClusterConnector against a real MariaDB server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import localcluster
import localmariadb
from operator_harness import (
    OperatorProcess,
    apply,
    binding_type,
    connection_manifest,
    credentials_secret,
    wait_for_reason,
    wait_for_single_failed_login,
)

PASSWORD = f"mysql-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def shop_db(mariadb: localmariadb.MariadbServer) -> localmariadb.MariadbServer:
    localmariadb.execute(mariadb, "create database shop")
    localmariadb.execute(mariadb, f"create user shopper identified by '{PASSWORD}'")
    localmariadb.execute(mariadb, "grant select on shop.* to shopper")
    return mariadb


def mysql_connection(name: str, port: int, username: str = "shopper") -> dict[str, Any]:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "database": "shop",
        "username": username,
        "sslmode": "DISABLED",
    }
    return connection_manifest(
        name,
        {"name": "mysql"},
        config,
        f"{name}-credentials",
        verification={"checks": [{"type": "table", "table": "information_schema.tables"}]},
    )


def test_good_password_is_ready_with_the_mariadb_version_and_a_binding(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    shop_db: localmariadb.MariadbServer,
) -> None:
    apply(
        control_plane,
        namespace,
        credentials_secret("shop", password=PASSWORD),
        mysql_connection("shop", shop_db.port),
    )
    obj = wait_for_reason(control_plane, namespace, "shop", "Verified")
    assert obj["status"]["phase"] == "Ready"
    verification = obj["status"]["verification"]
    assert verification["details"]["serverVersion"].startswith("MariaDB ")
    assert [c["result"] for c in verification["checks"]] == ["Succeeded"]
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "mysql"
    assert binding_type(control_plane, namespace, "shop") == "servicebinding.io/mysql"
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
        credentials_secret("wrongpw", password="wrong-password"),
        mysql_connection("wrongpw", shop_db.port, username=user),
    )
    obj = wait_for_single_failed_login(
        control_plane, namespace, "wrongpw", lambda: shop_db.login_attempts(user)
    )
    assert obj["status"]["verification"]["error"]["retryable"] is False
