"""The `patchbay` CLI, run for real (`python -m patchbay.cli`), against the local control
plane, a local PostgreSQL server and, for verification, the real operator.

Everything connects to 127.0.0.1 only (127.0.0.2 appears only behind an egress deny rule).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
import localpostgres
from operator_harness import (
    OperatorProcess,
    get_json,
    secret_manifest,
    wait_for,
    wait_for_reason,
)
from tests.conftest import REPO_ROOT
from tests.controlplane.test_operator_http import apply

PASSWORD = f"cli-canary-{uuid.uuid4().hex}"
ROWS_IN_ORDERS = 5


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localpostgres.PostgresServer]:
    server = localpostgres.start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        localpostgres.execute(server, f"create role app login password '{PASSWORD}'")
        localpostgres.execute(server, "create database shop")
        localpostgres.execute(
            server,
            "create schema sales;"
            "create table sales.orders (id int primary key, customer text not null,"
            " amount numeric(10, 2), note text);"
            "insert into sales.orders select i, 'customer ' || i, i * 2.5, null"
            f" from generate_series(1, {ROWS_IN_ORDERS}) i;"
            "create view sales.big_orders as select * from sales.orders where amount > 5;"
            "create table public.hidden (value text);"
            "grant usage on schema sales to app;"
            # insert too: only the read-only transaction may stop a write
            "grant select, insert on sales.orders, sales.big_orders to app;",
            dbname="shop",
        )
        yield server
    finally:
        server.stop()


def order_count(server: localpostgres.PostgresServer) -> int:
    return int(localpostgres.execute(server, "select count(*) from sales.orders", "shop")[0][0])


def connection(
    name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    connector: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {
            "connectorRef": connector or {"name": "postgres"},
            "config": {
                "host": host,
                "port": port,
                "database": "shop",
                "username": "app",
                "sslmode": "disable",
            },
            "credentials": {"secretRef": {"name": "shop-credentials"}},
            **spec,
        },
    }


def credentials(password: str = PASSWORD) -> dict[str, Any]:
    return secret_manifest("shop-credentials", password=password)


@pytest.fixture
def shop(
    control_plane: localcluster.ControlPlane, namespace: str, postgres: localpostgres.PostgresServer
) -> str:
    """A Connection `shop` to the shop database; returns its namespace."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    apply(control_plane, namespace, credentials(), connection("shop", postgres.port))
    return namespace


@pytest.fixture
def operator(
    control_plane: localcluster.ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    process = OperatorProcess(control_plane, tmp_path / "operator.log", "-n", namespace)
    yield process
    process.stop()


def cli(
    cp: localcluster.ControlPlane, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it. No secret value may ever appear in what it prints."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patchbay.cli",
            *args,
            "--kubeconfig",
            str(kubeconfig or cp.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},  # only --kubeconfig counts
        check=False,
    )
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cli_json(cp: localcluster.ControlPlane, *args: str) -> Any:
    result = cli(cp, *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ----- discovery -----------------------------------------------------------------------


def test_tables_lists_readable_tables_and_system_tables_only_when_asked(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    listed = cli_json(control_plane, "tables", "shop", "-n", shop)["tables"]
    assert {"schema": "sales", "name": "orders", "kind": "table"} in listed
    assert {"schema": "sales", "name": "big_orders", "kind": "view"} in listed
    assert all(t["name"] != "hidden" for t in listed)  # no SELECT privilege
    assert all(t["schema"] not in ("pg_catalog", "information_schema") for t in listed)

    with_system = cli_json(control_plane, "tables", "shop", "-n", shop, "--include-system")
    assert {"schema": "pg_catalog", "name": "pg_class", "kind": "table"} in with_system["tables"]

    table = cli(control_plane, "tables", "shop", "-n", shop).stdout.splitlines()
    header, rows = table[0], table[1:]
    assert header.split() == ["SCHEMA", "NAME", "KIND"]
    orders = next(line for line in rows if " orders " in f"{line} ")
    assert orders.index("orders") == header.index("NAME")  # columns are aligned


def test_columns_show_type_nullability_and_primary_key(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    result = cli(control_plane, "columns", "shop", "sales.orders", "-n", shop, "-o", "yaml")
    assert result.returncode == 0, result.stderr
    columns = yaml.safe_load(result.stdout)["columns"]
    assert [(c["name"], c["dataType"], c["nullable"], c["primaryKey"]) for c in columns] == [
        ("id", "integer", False, True),
        ("customer", "text", False, False),
        ("amount", "numeric(10,2)", True, False),
        ("note", "text", True, False),
    ]

    missing = cli(control_plane, "columns", "shop", "sales.nope", "-n", shop)
    assert error_line(missing) == "error: ResourceNotFound: table sales.nope does not exist"


def test_sample_returns_at_most_the_requested_rows(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    two = cli_json(control_plane, "sample", "shop", "sales.orders", "--rows", "2", "-n", shop)
    assert [c["name"] for c in two["columns"]] == ["id", "customer", "amount", "note"]
    assert (len(two["rows"]), two["rowCount"]) == (2, 2)
    assert two["truncated"] is True

    everything = cli_json(control_plane, "sample", "shop", "sales.orders", "-n", shop)
    assert len(everything["rows"]) == ROWS_IN_ORDERS
    assert everything["truncated"] is False
    first = min(everything["rows"])
    assert first == [1, "customer 1", "2.50", None]  # exact numerics as text

    table = cli(control_plane, "sample", "shop", "sales.orders", "--rows", "2", "-n", shop)
    assert "NULL" in table.stdout
    assert table.stdout.rstrip().endswith(
        "(2 rows; truncated: more rows or longer values than shown)"
    )


def test_query_row_cap_sets_truncated(control_plane: localcluster.ControlPlane, shop: str) -> None:
    sql = "select id from sales.orders order by id"
    capped = cli_json(control_plane, "query", "shop", sql, "--max-rows", "3", "-n", shop)
    assert capped["columns"] == [{"name": "id", "normalizedName": "id", "dataType": "integer"}]
    assert (capped["rows"], capped["rowCount"], capped["truncated"]) == ([[1], [2], [3]], 3, True)

    exact = cli_json(control_plane, "query", "shop", sql, "--max-rows", "5", "-n", shop)
    assert exact["rows"] == [[1], [2], [3], [4], [5]]
    assert exact["truncated"] is False


def test_query_cannot_write(
    control_plane: localcluster.ControlPlane, shop: str, postgres: localpostgres.PostgresServer
) -> None:
    before = order_count(postgres)
    insert = cli(
        control_plane,
        "query",
        "shop",
        "insert into sales.orders values (100, 'x') returning id",
        "-n",
        shop,
    )
    assert error_line(insert).startswith("error: ConfigInvalid: only a query may run here")
    # A second statement cannot commit and escape the read-only transaction either.
    smuggled = cli(
        control_plane,
        "query",
        "shop",
        "select 1; commit; insert into sales.orders values (101, 'y')",
        "-n",
        shop,
    )
    assert smuggled.returncode != 0
    assert order_count(postgres) == before


def test_sql_longer_than_10000_characters_is_rejected_before_anything_is_contacted(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    too_long = "select 1" + " " * (10_001 - len("select 1"))
    # The Connection does not even exist: the length is checked first.
    rejected = cli(control_plane, "query", "no-such-connection", too_long, "-n", shop)
    assert error_line(rejected) == (
        "error: the SQL statement has 10001 characters; at most 10000 are allowed"
    )

    longest = "select 1" + " " * (10_000 - len("select 1"))
    assert cli_json(control_plane, "query", "shop", longest, "-n", shop)["rows"] == [[1]]


def test_files_on_a_driver_without_file_browsing_says_so(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    for args in (
        ("files", "shop"),
        ("validate-selection", "shop", "/incoming", "--max-items", "5"),
    ):
        result = cli(control_plane, *args, "-n", shop)
        assert error_line(result) == "error: driver postgres does not support file browsing"


def test_wrong_password_is_authentication_failed_without_the_password(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
) -> None:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    apply(
        control_plane,
        namespace,
        credentials("wrong-" + PASSWORD),
        connection("shop", postgres.port),
    )
    result = cli(control_plane, "tables", "shop", "-n", namespace)
    line = error_line(result)
    assert line.startswith("error: AuthenticationFailed: ")
    assert "wrong-" not in line


def test_discovery_honours_the_egress_policy(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
) -> None:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    apply(
        control_plane, namespace, credentials(), connection("shop", postgres.port, host="127.0.0.2")
    )
    result = cli(control_plane, "tables", "shop", "-n", namespace, "--egress-deny", "127.0.0.2/32")
    assert error_line(result).startswith("error: EgressDenied: 127.0.0.2 resolves to 127.0.0.2")


def test_discovery_honours_the_connection_timeout(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
) -> None:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    slow = connection("shop", postgres.port, verification={"timeout": "1s"})
    apply(control_plane, namespace, credentials(), slow)
    result = cli(control_plane, "query", "shop", "select pg_sleep(60)", "-n", namespace)
    assert error_line(result) == "error: Timeout: no answer within 1s"


# ----- permissions ---------------------------------------------------------------------


def restricted_kubeconfig(cp: localcluster.ControlPlane, namespace: str, path: Path) -> Path:
    """A ServiceAccount that may read Connections and Connectors but not Secrets."""
    cp.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cp.kubectl(
        "create",
        "role",
        "connection-reader",
        "--verb=get,list",
        "--resource=connections.patchbay.dev,connectors.patchbay.dev",
        "-n",
        namespace,
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "connection-reader",
        "--role=connection-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    # The authorizer learns of new RBAC objects through a watch: wait until it has.
    wait_for(
        lambda: (
            cp.kubectl(
                "auth",
                "can-i",
                "get",
                "connections.patchbay.dev",
                f"--as=system:serviceaccount:{namespace}:reader",
                "-n",
                namespace,
                check=False,
            ).stdout.strip()
            == "yes"
        ),
        "the reader's Role to take effect",
    )
    token = cp.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    admin = json.loads(cp.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "reader", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "reader",
                        "context": {
                            "cluster": cluster["name"],
                            "user": "reader",
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": "reader",
            }
        )
    )
    return path


def test_caller_without_secret_access_gets_a_one_line_forbidden(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    tmp_path: Path,
) -> None:
    postgres_connector = yaml.safe_load((REPO_ROOT / "deploy/connectors/postgres.yaml").read_text())
    postgres_connector["kind"] = "Connector"  # namespaced: the Role covers it
    apply(
        control_plane,
        namespace,
        postgres_connector,
        credentials(),
        connection("shop", postgres.port, connector={"kind": "Connector", "name": "postgres"}),
    )
    kubeconfig = restricted_kubeconfig(control_plane, namespace, tmp_path / "reader.kubeconfig")

    # The namespace comes from the kubeconfig context: no -n.
    described = cli(control_plane, "describe", "shop", kubeconfig=kubeconfig)
    assert described.returncode == 0, described.stderr
    assert described.stdout.splitlines()[1].split() == ["Namespace:", namespace]

    denied = cli(control_plane, "tables", "shop", kubeconfig=kubeconfig)
    assert (
        error_line(denied) == f"error: forbidden: you may not get secrets in namespace {namespace}"
    )

    not_allowed_to_patch = cli(control_plane, "suspend", "shop", kubeconfig=kubeconfig)
    assert error_line(not_allowed_to_patch) == (
        f"error: forbidden: you may not patch connections in namespace {namespace}"
    )


def test_missing_connection_is_a_one_line_not_found(
    control_plane: localcluster.ControlPlane, namespace: str
) -> None:
    for command in ("describe", "verify", "suspend", "set-default", "tables"):
        result = cli(control_plane, command, "nope", "-n", namespace)
        assert error_line(result) == f"error: Connection 'nope' not found in namespace {namespace}"


# ----- management ----------------------------------------------------------------------


def test_describe_shows_status_checks_and_secret_fields_but_no_values(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    operator: OperatorProcess,
) -> None:
    checked = connection(
        "shop",
        postgres.port,
        default=True,
        verification={"checks": [{"type": "table", "table": "sales.orders"}]},
    )
    apply(control_plane, namespace, credentials(), checked)
    wait_for_reason(control_plane, namespace, "shop", "Verified")

    described = cli_json(control_plane, "describe", "shop", "-n", namespace)
    assert described["phase"] == "Ready"
    assert described["driver"] == "postgres"
    assert described["isDefault"] is True
    assert described["binding"] == "shop-binding"
    assert described["secretFields"] == {"password": {"configured": True}}
    assert described["verification"]["result"] == "Succeeded"
    assert described["verification"]["error"] is None
    assert described["verification"]["checks"][0]["target"] == "sales.orders"
    ready = next(c for c in described["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Verified")

    as_yaml = cli(control_plane, "describe", "shop", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == described

    text = cli(control_plane, "describe", "shop", "-n", namespace).stdout
    assert ["Phase:", "Ready"] in [line.split() for line in text.splitlines()]
    assert "  password   true" in text
    assert "sales.orders" in text


def test_verify_wait_shows_the_result_of_a_new_verification(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    operator: OperatorProcess,
) -> None:
    apply(control_plane, namespace, credentials(), connection("shop", postgres.port))
    wait_for_reason(control_plane, namespace, "shop", "Verified")
    first_attempt = get_json(control_plane, "connection", "shop", "-n", namespace)["status"][
        "verification"
    ]["lastAttemptTime"]

    result = cli(control_plane, "verify", "shop", "--wait", "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert "waiting for connection/shop to be verified" in result.stderr
    shown = json.loads(result.stdout)["verification"]
    annotation = get_json(control_plane, "connection", "shop", "-n", namespace)["metadata"][
        "annotations"
    ]["patchbay.dev/verify-requested-at"]
    assert shown["requestedAt"] == annotation
    assert shown["result"] == "Succeeded"
    assert shown["lastAttemptTime"] >= first_attempt


def test_verify_wait_exits_non_zero_when_verification_fails(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    operator: OperatorProcess,
) -> None:
    apply(control_plane, namespace, credentials("wrong"), connection("shop", postgres.port))
    result = cli(control_plane, "verify", "shop", "--wait", "-n", namespace)
    assert result.returncode == 1
    assert "Error:" in result.stdout
    assert "AuthenticationFailed" in result.stdout

    requested = cli_json(control_plane, "verify", "shop", "-n", namespace)
    assert requested["name"] == "shop"
    assert requested["requestedAt"].endswith("Z")


def test_suspend_stops_discovery_and_verification_until_resume(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    operator: OperatorProcess,
) -> None:
    apply(control_plane, namespace, credentials(), connection("shop", postgres.port))
    wait_for_reason(control_plane, namespace, "shop", "Verified")

    suspended = cli(control_plane, "suspend", "shop", "-n", namespace)
    assert suspended.stdout.strip() == "connection/shop suspended"
    wait_for_reason(control_plane, namespace, "shop", "Suspended")
    assert cli_json(control_plane, "describe", "shop", "-n", namespace)["phase"] == "Suspended"
    assert "is suspended" in error_line(cli(control_plane, "tables", "shop", "-n", namespace))
    assert "is suspended" in error_line(cli(control_plane, "verify", "shop", "-n", namespace))

    resumed = cli_json(control_plane, "resume", "shop", "-n", namespace)
    assert resumed == {"name": "shop", "namespace": namespace, "suspend": False}
    wait_for_reason(control_plane, namespace, "shop", "Verified")


def test_set_default_clears_the_flag_on_other_connections_of_the_same_connector(
    control_plane: localcluster.ControlPlane, namespace: str
) -> None:
    other_connector = {"kind": "Connector", "name": "postgres"}
    apply(
        control_plane,
        namespace,
        connection("old-default", 5432, default=True),
        connection("new-default", 5432),
        connection("elsewhere", 5432, default=True, connector=other_connector),
    )
    result = cli_json(control_plane, "set-default", "new-default", "-n", namespace)
    assert result["cleared"] == ["old-default"]

    def default(name: str) -> bool:
        spec = get_json(control_plane, "connection", name, "-n", namespace)["spec"]
        return bool(spec.get("default"))

    assert default("new-default")
    assert not default("old-default")
    assert default("elsewhere")  # another connector's default is not touched


# ----- listing -------------------------------------------------------------------------


def test_connections_are_listed_filtered_by_the_api_server_searched_sorted_and_paged(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
    operator: OperatorProcess,
) -> None:
    mysql = {"kind": "ClusterConnector", "name": "mysql"}
    apply(
        control_plane,
        namespace,
        credentials(),
        secret_manifest("wrong-credentials", password="not-the-password"),
        connection("orders", postgres.port, displayName="Orders database"),
        connection(
            "billing",
            postgres.port,
            credentials={"secretRef": {"name": "wrong-credentials"}},
        ),
        connection("archive", postgres.port, suspend=True),
        connection(
            "stock",
            1,
            connector=mysql,
            config={"host": "127.0.0.1", "port": 1, "database": "stock", "username": "app"},
        ),
    )
    for name, reason in (
        ("orders", "Verified"),
        ("billing", "AuthenticationFailed"),
        ("archive", "Suspended"),
        ("stock", "HostUnreachable"),
    ):
        wait_for_reason(control_plane, namespace, name, reason)

    def kubectl_names(*args: str) -> list[str]:
        got = control_plane.kubectl("get", "connections", "-n", namespace, "-o", "name", *args)
        return sorted(line.rsplit("/", 1)[1] for line in got.stdout.split())

    # the API server filters on the CRD's selectable fields
    assert kubectl_names("--field-selector", "spec.connectorRef.name=postgres") == [
        "archive",
        "billing",
        "orders",
    ]
    assert kubectl_names("--field-selector", "status.phase=Failed") == ["billing", "stock"]
    assert kubectl_names("--field-selector", "status.reason=AuthenticationFailed") == ["billing"]
    wide = control_plane.kubectl("get", "connections", "-n", namespace, "-o", "wide").stdout
    assert "DISPLAY NAME" in wide and "Orders database" in wide

    def listed(*args: str) -> dict[str, Any]:
        result: dict[str, Any] = cli_json(control_plane, "list", "-n", namespace, *args)
        return result

    def names(data: dict[str, Any]) -> list[str]:
        return [item["name"] for item in data["items"]]

    assert names(listed("--connector", "postgres", "--phase", "Failed")) == ["billing"]
    assert names(listed("--reason", "Suspended")) == ["archive"]
    assert names(listed("--driver", "mysql")) == ["stock"]
    assert names(listed("--search", "ORDERS database")) == ["orders"]
    first = listed("--sort=-name", "--limit", "3")
    assert (names(first), first["total"]) == (["stock", "orders", "billing"], 4)
    rest = listed("--sort=-name", "--limit", "3", "--continue", first["continue"])
    assert (names(rest), rest["continue"]) == (["archive"], None)
    foreign = cli(control_plane, "list", "-n", namespace, "--continue", first["continue"])
    assert "other filters or order" in error_line(foreign)
    table = cli(control_plane, "list", "-n", namespace, "--phase", "Ready").stdout
    assert "Orders database" in table and "1 of 1 connection(s)" in table


def test_describe_shows_display_name_and_config_but_never_an_inline_secret(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    postgres: localpostgres.PostgresServer,
) -> None:
    careless = connection(
        "shop",
        postgres.port,
        displayName="Shop",
        description="the web shop's orders",
    )
    careless["spec"]["config"]["password"] = PASSWORD  # refused where the webhook runs
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    apply(control_plane, namespace, credentials(), careless)

    described = cli_json(control_plane, "describe", "shop", "-n", namespace)

    assert (described["displayName"], described["description"]) == (
        "Shop",
        "the web shop's orders",
    )
    config = {entry["key"]: entry for entry in described["config"]}
    assert (config["host"]["value"], config["host"]["set"]) == ("127.0.0.1", True)
    assert (config["requireAuth"]["set"], config["requireAuth"]["advanced"]) == (False, True)
    assert config["password"]["value"] == "(a secret variable: not shown)"
    text = cli(control_plane, "describe", "shop", "-n", namespace).stdout
    assert "Display name:" in text and "requireAuth" in text
