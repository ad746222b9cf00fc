"""Fixtures of every tier. Servers are started once per session, on loopback, only
when a test asks for them, and stopped at the end, also when tests fail.

The tiers are the directories, named for what their tests need:
- ``unit``: nothing but Python;
- ``drivers``: real servers (PostgreSQL, MariaDB, OpenSSH, MinIO, HTTP), no cluster;
- ``controlplane``: a real etcd + kube-apiserver + kube-controller-manager too;
- ``chart``: the control plane and helm, with the chart and the kustomize base installed.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import localcluster
import localmariadb
import locals3
import localsshd
from http_server import TokenApi, serve_token_api
from localserver import stopping
from operator_harness import OperatorProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "drivers", "controlplane", "chart")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        tier = Path(str(item.fspath)).relative_to(tests).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.ControlPlane]:
    with stopping(localcluster.start_control_plane(tmp_path_factory.mktemp("control-plane"))) as cp:
        localcluster.install_crds(cp, REPO_ROOT / "crds")
        yield cp


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localmariadb.MariadbServer]:
    """One MariaDB server per session; each test module creates its own databases and users."""
    with stopping(localmariadb.start_mariadb(tmp_path_factory.mktemp("mariadb"))) as server:
        yield server


@pytest.fixture
def namespace(control_plane: localcluster.ControlPlane) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards without waiting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[locals3.S3Server]:
    """One MinIO server for the test run; tests create buckets with names of their own."""
    with stopping(locals3.start_s3(tmp_path_factory.mktemp("minio"))) as server:
        yield server


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    """Options the operator runs with besides its namespace; a test module may override this."""
    return ()


@pytest.fixture
def operator(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    tmp_path: Path,
    operator_args: tuple[str, ...],
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, with the connector catalogue applied."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    process = OperatorProcess(
        control_plane, tmp_path / "operator.log", "-n", namespace, *operator_args
    )
    yield process
    process.stop()


@pytest.fixture
def token() -> str:
    """A bearer token for a test API; its canary prefix makes a leak easy to search for."""
    return f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def api(token: str) -> Iterator[TokenApi]:
    """An HTTP API on loopback that accepts only ``token``."""
    with serve_token_api(token) as server:
        yield server


@pytest.fixture(scope="session")
def sshd() -> Iterator[localsshd.SshServer]:
    """One OpenSSH server with a test user for the whole run, stopped at the end."""
    with stopping(localsshd.start_sshd()) as server:
        yield server


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a driver's temporary files go, to check that it removes them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path
