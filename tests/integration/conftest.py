"""Integration fixtures: a real etcd + kube-apiserver + kube-controller-manager.

The control plane is started once per test session on loopback ports, the
CRDs from crds/ are installed, and everything is stopped at the end, also
when tests fail.
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
from tests.conftest import REPO_ROOT
from tests.integration.operator_harness import OperatorProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.ControlPlane]:
    cp = localcluster.start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        localcluster.install_crds(cp, REPO_ROOT / "crds")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localmariadb.MariadbServer]:
    """One MariaDB server per session; each test module creates its own databases and users."""
    server = localmariadb.start_mariadb(tmp_path_factory.mktemp("mariadb"))
    try:
        yield server
    finally:
        server.stop()


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
    server = locals3.start_s3(tmp_path_factory.mktemp("minio"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator(
    control_plane: localcluster.ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, with the connector catalogue applied."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    process = OperatorProcess(control_plane, tmp_path / "operator.log", "-n", namespace)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def sshd() -> Iterator[localsshd.SshServer]:
    """One OpenSSH server with a test user for the whole run, stopped at the end."""
    server = localsshd.start_sshd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a driver's temporary files go, to check that it removes them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path
