"""The `patchbay` discovery commands, run for real, through Connections of the mysql, s3 and
sftp drivers: against a local MariaDB server, a local MinIO server and a local OpenSSH server;
and through a copy of the google-drive entry, against a stand-in of the Drive API that
answers as Google documents it (tests/support/saas_files.py).

The same tree of files is put into a bucket (under the Connection's prefix) and into a
directory on the SSH server (the Connection's basePath), so the file-browsing tests run
unchanged against both. Everything connects to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
import localmariadb
import locals3
import localsshd
import saas_files
from operator_harness import secret_manifest
from tests.conftest import REPO_ROOT
from tests.controlplane import test_cli
from tests.controlplane.test_operator_http import apply

SUFFIX = uuid.uuid4().hex[:8]
DATABASE = f"shop_{SUFFIX}"
DB_USER = f"browser_{SUFFIX}"
DB_PASSWORD = f"db-canary-{uuid.uuid4().hex}"
ROWS_IN_ORDERS = 5

# What the file-browsing tests find under the root of every file Connection.
TREE = {
    "readme.txt": b"hello\n",
    "incoming/orders.csv": b"id\n1\n",
    "incoming/2024/jan.csv": b"a\n1",
    "incoming/2024/feb.csv": b"b\n22",
}
INCOMING_BYTES = 5 + 3 + 4
# One entry more than a page holds (both drivers serve 1000 entries a page).
MANY = 1001
BUCKET = f"browse-{SUFFIX}"
PREFIX = "team"
FILES = "files"  # the name of the file Connection in every test's namespace


def cli(cp: localcluster.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; none of this module's secrets may appear in its output."""
    result = test_cli.cli(cp, *args)
    assert DB_PASSWORD not in result.stdout + result.stderr
    return result


def cli_json(cp: localcluster.ControlPlane, *args: str) -> Any:
    result = cli(cp, *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    return test_cli.error_line(result)


def connection(name: str, connector: str, secret: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {
            "connectorRef": {"name": connector},
            "config": config,
            "credentials": {"secretRef": {"name": secret}},
        },
    }


def secret(name: str, **values: str) -> dict[str, Any]:
    return secret_manifest(name, **values)


def apply_connection(
    cp: localcluster.ControlPlane, namespace: str, *objects: dict[str, Any]
) -> None:
    cp.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    apply(cp, namespace, *objects)


# ----- mysql: SQL browsing -------------------------------------------------------------


@pytest.fixture(scope="module")
def shop_db(mariadb: localmariadb.MariadbServer) -> localmariadb.MariadbServer:
    for statement in (
        f"create database {DATABASE}",
        f"create table {DATABASE}.orders (id int primary key, customer varchar(40) not null,"
        " amount decimal(10, 2), note text)",
        f"insert into {DATABASE}.orders values "
        + ", ".join(
            f"({i}, 'customer {i}', {i * 2.5}, null)" for i in range(1, ROWS_IN_ORDERS + 1)
        ),
        f"create view {DATABASE}.big_orders as select * from {DATABASE}.orders where amount > 5",
        f"create table {DATABASE}.hidden (value text)",
        f"create user {DB_USER} identified by '{DB_PASSWORD}'",
        # insert too: only the read-only transaction may stop a write
        f"grant select, insert on {DATABASE}.orders to {DB_USER}",
        f"grant select on {DATABASE}.big_orders to {DB_USER}",
    ):
        localmariadb.execute(mariadb, statement)
    return mariadb


@pytest.fixture
def shop(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    shop_db: localmariadb.MariadbServer,
) -> str:
    """A Connection `shop` on the mysql connector; returns its namespace."""
    config = {
        "host": shop_db.host,
        "port": shop_db.port,
        "database": DATABASE,
        "username": DB_USER,
        "sslmode": "DISABLED",
    }
    apply_connection(
        control_plane,
        namespace,
        secret("shop-credentials", password=DB_PASSWORD),
        connection("shop", "mysql", "shop-credentials", config),
    )
    return namespace


def order_count(server: localmariadb.MariadbServer) -> int:
    return int(str(localmariadb.execute(server, f"select count(*) from {DATABASE}.orders")[0][0]))


def test_mysql_tables_lists_readable_tables_and_system_tables_only_when_asked(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    listed = cli_json(control_plane, "tables", "shop", "-n", shop)["tables"]
    assert {"schema": DATABASE, "name": "orders", "kind": "table"} in listed
    assert {"schema": DATABASE, "name": "big_orders", "kind": "view"} in listed
    assert all(t["name"] != "hidden" for t in listed)  # no privilege on it
    assert all(t["schema"] != "information_schema" for t in listed)

    with_system = cli_json(control_plane, "tables", "shop", "-n", shop, "--include-system")
    system_tables = {(t["schema"], t["name"], t["kind"]) for t in with_system["tables"]}
    assert ("information_schema", "TABLES", "system view") in system_tables
    assert (DATABASE, "orders", "table") in system_tables


def test_mysql_columns_show_the_servers_type_nullability_and_primary_key(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    found = cli_json(control_plane, "columns", "shop", f"{DATABASE}.orders", "-n", shop)
    assert [
        (c["name"], c["dataType"], c["nullable"], c["primaryKey"]) for c in found["columns"]
    ] == [
        ("id", "int(11)", False, True),
        ("customer", "varchar(40)", False, False),
        ("amount", "decimal(10,2)", True, False),
        ("note", "text", True, False),
    ]
    assert all(c["normalizedName"] == c["name"] for c in found["columns"])

    missing = cli(control_plane, "columns", "shop", f"{DATABASE}.nope", "-n", shop)
    assert error_line(missing) == f"error: ResourceNotFound: table {DATABASE}.nope does not exist"
    # A table the login has no privilege on does not exist as far as it can tell.
    hidden = cli(control_plane, "columns", "shop", f"{DATABASE}.hidden", "-n", shop)
    assert error_line(hidden).startswith("error: ResourceNotFound: ")


def test_mysql_sample_returns_at_most_the_requested_rows(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    table = f"{DATABASE}.orders"
    two = cli_json(control_plane, "sample", "shop", table, "--rows", "2", "-n", shop)
    assert [(c["name"], c["dataType"]) for c in two["columns"]] == [
        ("id", "int"),
        ("customer", "varchar(40)"),
        ("amount", "decimal(10,2)"),
        ("note", "text"),
    ]
    assert (len(two["rows"]), two["rowCount"], two["truncated"]) == (2, 2, True)

    everything = cli_json(control_plane, "sample", "shop", table, "-n", shop)
    assert len(everything["rows"]) == ROWS_IN_ORDERS
    assert everything["truncated"] is False
    assert min(everything["rows"]) == [1, "customer 1", "2.50", None]  # decimals as text


ID_COLUMN = {"name": "id", "normalizedName": "id", "dataType": "int"}


def test_mysql_query_row_cap_sets_truncated(
    control_plane: localcluster.ControlPlane, shop: str
) -> None:
    sql = "select id from orders order by id"
    capped = cli_json(control_plane, "query", "shop", sql, "--max-rows", "3", "-n", shop)
    assert capped == {
        "columns": [ID_COLUMN],
        "rows": [[1], [2], [3]],
        "rowCount": 3,
        "truncated": True,
    }

    exact = cli_json(control_plane, "query", "shop", sql, "--max-rows", "5", "-n", shop)
    assert exact["rows"] == [[1], [2], [3], [4], [5]]
    assert exact["truncated"] is False

    # A LIMIT of the statement's own above the cap.
    limited = cli_json(
        control_plane, "query", "shop", f"{sql} limit 4", "--max-rows", "2", "-n", shop
    )
    assert limited == {"columns": [ID_COLUMN], "rows": [[1], [2]], "rowCount": 2, "truncated": True}


def test_mysql_query_cannot_write(
    control_plane: localcluster.ControlPlane, shop: str, shop_db: localmariadb.MariadbServer
) -> None:
    before = order_count(shop_db)
    insert = cli(
        control_plane, "query", "shop", "insert into orders values (100, 'x', 1, null)", "-n", shop
    )
    assert error_line(insert) == (
        "error: ConfigInvalid: Cannot execute statement in a READ ONLY transaction"
    )
    # A second statement cannot commit and escape the read-only transaction either.
    smuggled = cli(
        control_plane,
        "query",
        "shop",
        "select 1; commit; insert into orders values (101, 'y', 1, null)",
        "-n",
        shop,
    )
    assert smuggled.returncode != 0
    committed = cli(control_plane, "query", "shop", "commit", "-n", shop)
    assert error_line(committed).startswith("error: ConfigInvalid: the query returned no result")
    assert order_count(shop_db) == before


# ----- s3 and sftp: file browsing ------------------------------------------------------


def write_tree(root: Path) -> None:
    for relative, body in TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    many = root / "many"
    many.mkdir()
    for number in range(MANY):
        (many / f"f{number:04}").write_bytes(b"x")


@pytest.fixture(scope="module")
def bucket(s3_server: locals3.S3Server) -> locals3.S3Server:
    """The tree under the prefix `team/`, and a key outside it."""
    s3_server.create_bucket(BUCKET)
    s3 = s3_server.client()
    objects = {f"{PREFIX}/{relative}": body for relative, body in TREE.items()}
    objects |= {f"{PREFIX}/many/f{number:04}": b"x" for number in range(MANY)}
    objects["outside.txt"] = b"not under the prefix"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda item: s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]),
                objects.items(),
            )
        )
    return s3_server


@pytest.fixture(scope="module")
def sftp_tree(sshd: localsshd.SshServer) -> Iterator[str]:
    """The tree in a directory of the test user's home; returns it relative to the home."""
    top = sshd.home / f"browse-{SUFFIX}"
    root = top / "root"
    root.mkdir(parents=True)
    (top / "outside.txt").write_text("not under the base path")
    write_tree(root)
    try:
        yield f"browse-{SUFFIX}/root"
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(params=["s3", "sftp"])
def files_ns(
    request: pytest.FixtureRequest, control_plane: localcluster.ControlPlane, namespace: str
) -> str:
    """A Connection `files` whose root holds TREE, on the s3 or the sftp connector."""
    if request.param == "s3":
        s3: locals3.S3Server = request.getfixturevalue("bucket")
        config: dict[str, Any] = {
            "endpoint": s3.endpoint,
            "bucket": BUCKET,
            "prefix": PREFIX,
            "pathStyle": True,
        }
        keys = secret(
            "files-keys",
            accessKeyId=s3.root.access_key_id,
            secretAccessKey=s3.root.secret_access_key,
        )
    else:
        sshd: localsshd.SshServer = request.getfixturevalue("sshd")
        config = {
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "knownHosts": sshd.known_hosts,
            "basePath": request.getfixturevalue("sftp_tree"),
        }
        keys = secret("files-keys", password=sshd.password)
    apply_connection(
        control_plane, namespace, keys, connection(FILES, request.param, "files-keys", config)
    )
    return namespace


def entries(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in listing["entries"]}


def test_files_lists_the_root_with_directories_and_file_sizes(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    listing = cli_json(control_plane, "files", FILES, "-n", files_ns)
    found = entries(listing)
    assert set(found) >= {"incoming", "many", "readme.txt"}
    assert "outside.txt" not in found  # above the Connection's root
    assert found["incoming"] == {
        "id": None,  # s3 and sftp name things by path only
        "name": "incoming",
        "path": "/incoming",
        "kind": "directory",
        "size": None,
        "mimeType": None,
        "modifiedAt": found["incoming"]["modifiedAt"],
    }
    readme = found["readme.txt"]
    assert (readme["kind"], readme["size"], readme["path"]) == ("file", 6, "/readme.txt")
    assert readme["modifiedAt"] is not None
    assert listing["nextPageToken"] is None

    table = cli(control_plane, "files", FILES, "/", "-n", files_ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "SIZE", "MODIFIED"]


def test_files_lists_a_subdirectory_and_a_file_alone(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    incoming = entries(cli_json(control_plane, "files", FILES, "/incoming", "-n", files_ns))
    assert set(incoming) == {"2024", "orders.csv"}
    assert incoming["2024"]["kind"] == "directory"
    assert incoming["orders.csv"]["path"] == "/incoming/orders.csv"
    year = entries(
        cli_json(control_plane, "files", FILES, incoming["2024"]["path"], "-n", files_ns)
    )
    assert {name: e["size"] for name, e in year.items()} == {"feb.csv": 4, "jan.csv": 3}

    alone = cli_json(control_plane, "files", FILES, "/incoming/orders.csv", "-n", files_ns)
    assert [(e["name"], e["kind"], e["size"]) for e in alone["entries"]] == [
        ("orders.csv", "file", 5)
    ]
    assert alone["nextPageToken"] is None


def test_files_pages_through_a_large_directory_with_the_page_token(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    first = cli_json(control_plane, "files", FILES, "/many", "-n", files_ns)
    token = first["nextPageToken"]
    assert token
    assert len(first["entries"]) < MANY
    second = cli_json(control_plane, "files", FILES, "/many", "--page-token", token, "-n", files_ns)
    assert second["nextPageToken"] is None
    names = [e["name"] for e in first["entries"] + second["entries"]]
    assert sorted(names) == [f"f{number:04}" for number in range(MANY)]  # each exactly once

    table = cli(control_plane, "files", FILES, "/many", "-n", files_ns).stdout
    assert table.rstrip().endswith(f"more entries: --page-token {token}")

    forged = cli(control_plane, "files", FILES, "/many", "--page-token", "a%b", "-n", files_ns)
    assert error_line(forged).startswith("error: ConfigInvalid: ")


def test_files_on_a_missing_path_is_resource_not_found(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    missing = cli(control_plane, "files", FILES, "/incoming/nope", "-n", files_ns)
    assert error_line(missing).startswith("error: ResourceNotFound: ")
    assert "/incoming/nope" in error_line(missing)


def test_validate_selection_counts_files_bytes_and_depth(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    report = cli_json(
        control_plane, "validate-selection", FILES, "/incoming", "/readme.txt", "-n", files_ns
    )
    assert report == {
        "totalItems": 4,
        "totalBytes": INCOMING_BYTES + 6,
        "maxDepth": 2,  # /incoming/2024/jan.csv
        "valid": True,
        "complete": True,
        "violations": [],
    }
    many = cli_json(control_plane, "validate-selection", FILES, "/many", "-n", files_ns)
    assert (many["totalItems"], many["totalBytes"]) == (MANY, MANY)  # across both pages


def test_validate_selection_reports_a_violated_limit_and_exits_1(
    control_plane: localcluster.ControlPlane, files_ns: str
) -> None:
    too_deep = cli(
        control_plane,
        "validate-selection", FILES, "/incoming", "--max-depth", "1", "-n", files_ns, "-o", "json",
    )  # fmt: skip
    assert too_deep.returncode == 1
    report = json.loads(too_deep.stdout)
    assert report["complete"] is False
    assert [v["code"] for v in report["violations"]] == ["TooDeep"]

    too_many = cli(
        control_plane, "validate-selection", FILES, "/many", "--max-items", "10", "-n", files_ns
    )
    assert too_many.returncode == 1
    assert "TooManyItems" in too_many.stdout

    missing = cli(control_plane, "validate-selection", FILES, "/nope", "-n", files_ns)
    assert missing.returncode == 1
    assert "NotFound" in missing.stdout


# ----- what only one file driver has ---------------------------------------------------


@pytest.fixture
def sftp_ns(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    sshd: localsshd.SshServer,
    sftp_tree: str,
) -> str:
    config = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "knownHosts": sshd.known_hosts,
        "basePath": sftp_tree,
    }
    apply_connection(
        control_plane,
        namespace,
        secret("files-keys", password=sshd.password),
        connection(FILES, "sftp", "files-keys", config),
    )
    return namespace


def test_sftp_paths_cannot_climb_above_the_base_path(
    control_plane: localcluster.ControlPlane, sftp_ns: str
) -> None:
    above = entries(cli_json(control_plane, "files", FILES, "/../..", "-n", sftp_ns))
    assert "outside.txt" not in above
    assert "readme.txt" in above  # ".." stops at the root


def test_sftp_unreadable_directory_is_permission_denied(
    control_plane: localcluster.ControlPlane,
    sftp_ns: str,
    sshd: localsshd.SshServer,
    sftp_tree: str,
) -> None:
    locked = sshd.home / sftp_tree / f"locked-{uuid.uuid4().hex[:6]}"
    locked.mkdir(mode=0o700)  # the test runs as root: the SFTP user may not read it
    try:
        denied = cli(control_plane, "files", FILES, f"/{locked.name}", "-n", sftp_ns)
        assert error_line(denied).startswith(f"error: PermissionDenied: /{locked.name}: ")
    finally:
        locked.rmdir()


def test_sftp_lists_links_to_files_and_leaves_out_links_to_directories(
    control_plane: localcluster.ControlPlane,
    sftp_ns: str,
    sshd: localsshd.SshServer,
    sftp_tree: str,
) -> None:
    root = sshd.home / sftp_tree
    links = {"link-file": "readme.txt", "link-dir": "incoming", "link-broken": "nowhere"}
    for name, target in links.items():
        os.symlink(target, root / name)
    try:
        found = entries(cli_json(control_plane, "files", FILES, "-n", sftp_ns))
        assert found["link-file"]["kind"] == "file"
        assert found["link-file"]["size"] == 6  # the target's size
        assert "link-dir" not in found
        assert "link-broken" not in found
        # A link to a directory can still be listed by its own path.
        through = entries(cli_json(control_plane, "files", FILES, "/link-dir", "-n", sftp_ns))
        assert set(through) == {"2024", "orders.csv"}
    finally:
        for name in links:
            (root / name).unlink()


# ----- a SaaS file API: Google Drive, through a copy of its catalogue entry ----------------

DRIVE = "drive-copy"


def drive_connector(**changes: Any) -> dict[str, Any]:
    """The google-drive entry as a Connector of the namespace, without the vendor's egress
    hosts, so that its Connections may reach the stand-in on 127.0.0.1."""
    entry = yaml.safe_load((REPO_ROOT / "deploy" / "connectors" / "google-drive.yaml").read_text())
    spec = {key: value for key, value in entry["spec"].items() if key != "egress"} | changes
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": DRIVE},
        "spec": spec,
    }


@pytest.fixture
def drive() -> Iterator[saas_files.FileApiServer]:
    with saas_files.file_api_in_thread("googleDrive") as server:
        yield server


def browse_drive(
    cp: localcluster.ControlPlane,
    namespace: str,
    server: saas_files.FileApiServer,
    connector: dict[str, Any],
) -> None:
    files = connection(
        FILES, DRIVE, "drive-keys", saas_files.connection_config("googleDrive", server)
    )
    files["spec"]["connectorRef"]["kind"] = "Connector"
    apply(cp, namespace, connector, secret("drive-keys", **saas_files.credentials()), files)


def drive_cli(cp: localcluster.ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli(cp, *args)
    said = result.stdout + result.stderr
    assert saas_files.CLIENT_SECRET not in said and saas_files.REFRESH_TOKEN not in said
    return result


def test_drive_files_and_selections_go_through_the_drive_api(
    control_plane: localcluster.ControlPlane, namespace: str, drive: saas_files.FileApiServer
) -> None:
    browse_drive(control_plane, namespace, drive, drive_connector())
    listed = drive_cli(
        control_plane, "files", FILES, "/My Drive/incoming", "-n", namespace, "-o", "json"
    )
    assert listed.returncode == 0, listed.stderr
    found = entries(json.loads(listed.stdout))
    assert found["orders.csv"] == {
        "id": "F-orders",
        "name": "orders.csv",
        "path": "/My Drive/incoming/orders.csv",
        "kind": "file",
        "size": 5,
        "mimeType": "text/csv",
        "modifiedAt": "2026-11-02T10:15:30.123000+00:00",
    }
    table = drive_cli(control_plane, "files", FILES, found["2024"]["id"], "-n", namespace)
    assert table.stdout.splitlines()[0].split() == ["NAME", "KIND", "SIZE", "MODIFIED", "ID"]

    selected = drive_cli(
        control_plane, "validate-selection", FILES, "/My Drive/incoming", "F-readme",
        "-n", namespace, "-o", "json",
    )  # fmt: skip
    assert json.loads(selected.stdout) == {
        "totalItems": 4,
        "totalBytes": saas_files.INCOMING_BYTES + saas_files.README_BYTES,
        "maxDepth": 2,
        "valid": True,
        "complete": True,
        "violations": [],
    }


def test_drive_discovery_waits_for_the_rate_limit_until_the_timeout(
    control_plane: localcluster.ControlPlane, namespace: str, drive: saas_files.FileApiServer
) -> None:
    limited = drive_connector(
        rateLimit={"requests": 3, "per": "1h"},
        verification={**drive_connector()["spec"]["verification"], "timeout": "3s"},
    )
    browse_drive(control_plane, namespace, drive, limited)
    walk = drive_cli(control_plane, "validate-selection", FILES, "/My Drive", "-n", namespace)
    assert walk.returncode == 1
    assert error_line(walk) == "error: Timeout: no answer within 3s"
    assert len(drive.seen) == 3  # the token request and two listings: the budget held
