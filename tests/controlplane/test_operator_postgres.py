"""The operator verifies PostgreSQL Connections against a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import localcluster
import localpostgres
from localserver import stopping
from operator_harness import (
    OperatorProcess,
    apply,
    binding_type,
    condition,
    connection_manifest,
    credentials_secret,
    wait_for_reason,
    wait_for_single_failed_login,
)

PASSWORD = f"pg-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localpostgres.PostgresServer]:
    with stopping(localpostgres.start_postgres(tmp_path_factory.mktemp("postgres"))) as server:
        localpostgres.execute(server, f"create role app login password '{PASSWORD}'")
        localpostgres.execute(server, "create database orders owner app")
        yield server


def pg_connection(name: str, port: int, database: str = "orders") -> list[dict[str, Any]]:
    config = {
        "host": "127.0.0.1",
        "port": port,
        "database": database,
        "username": "app",
        "sslmode": "disable",
    }
    return [connection_manifest(name, {"name": "postgres"}, config, f"{name}-credentials")]


def failed_logins(server: localpostgres.PostgresServer, user: str) -> int:
    text = server.log_path.read_text(errors="replace")
    return text.count(f'password authentication failed for user "{user}"')


def test_good_password_is_ready_with_server_version_and_binding_uri(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    postgres: localpostgres.PostgresServer,
) -> None:
    apply(
        control_plane,
        namespace,
        credentials_secret("orders", password=PASSWORD),
        *pg_connection("orders", postgres.port),
    )
    obj = wait_for_reason(control_plane, namespace, "orders", "Verified")
    assert obj["status"]["verification"]["details"]["serverVersion"].startswith("PostgreSQL")
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "postgres"
    assert binding_type(control_plane, namespace, "orders") == "servicebinding.io/postgresql"
    assert PASSWORD not in operator.logs()


def test_wrong_password_is_one_failed_login_per_scheduled_period(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    postgres: localpostgres.PostgresServer,
) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    localpostgres.execute(postgres, f"create role {user} login password 'right-password'")
    connection = pg_connection("wrongpw", postgres.port)
    connection[0]["spec"]["config"]["username"] = user
    apply(
        control_plane,
        namespace,
        credentials_secret("wrongpw", password="wrong-password"),
        *connection,
    )
    wait_for_single_failed_login(
        control_plane, namespace, "wrongpw", lambda: failed_logins(postgres, user)
    )


def test_missing_database_is_resource_not_found(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    postgres: localpostgres.PostgresServer,
) -> None:
    apply(
        control_plane,
        namespace,
        credentials_secret("nodb", password=PASSWORD),
        *pg_connection("nodb", postgres.port, database="missing"),
    )
    obj = wait_for_reason(control_plane, namespace, "nodb", "ResourceNotFound")
    assert "missing" in condition(obj, "Ready")["message"]


def test_closed_port_is_host_unreachable(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    postgres: localpostgres.PostgresServer,
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    apply(
        control_plane,
        namespace,
        credentials_secret("closed", password=PASSWORD),
        *pg_connection("closed", closed_port),
    )
    wait_for_reason(control_plane, namespace, "closed", "HostUnreachable")


def test_silent_listener_times_out_within_the_connection_timeout(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        connection = pg_connection("silent", listener.getsockname()[1])
        connection[0]["spec"]["verification"] = {"timeout": "2s"}
        apply(
            control_plane, namespace, credentials_secret("silent", password=PASSWORD), *connection
        )
        obj = wait_for_reason(control_plane, namespace, "silent", "Timeout")
    assert "2s" in condition(obj, "Ready")["message"]


def test_a_connections_own_check_cannot_read_data_back_through_the_error_text(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    postgres: localpostgres.PostgresServer,
) -> None:
    salary = f"salary-canary-{uuid.uuid4().hex}"
    localpostgres.execute(postgres, "create table if not exists payroll (note text)", "orders")
    localpostgres.execute(postgres, f"insert into payroll values ('{salary}')", "orders")
    localpostgres.execute(postgres, "grant select on payroll to app", "orders")
    connection = pg_connection("probe", postgres.port)
    leak = "select cast((select note from payroll limit 1) as int)"
    connection[0]["spec"]["verification"] = {"checks": [{"type": "query", "sql": leak}]}
    apply(
        control_plane,
        namespace,
        credentials_secret("probe", password=PASSWORD),
        *connection,
    )

    obj = wait_for_reason(control_plane, namespace, "probe", "ProviderError")
    (check,) = obj["status"]["verification"]["checks"]
    assert check["result"] == "Failed"
    assert "22P02" in check["message"]  # invalid_text_representation: the code only
    text = control_plane.kubectl("get", "connection", "probe", "-n", namespace, "-o", "yaml")
    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "yaml")
    for seen in (text.stdout, events.stdout, operator.logs()):
        assert salary not in seen
