"""The operator verifies SFTP Connections against a real OpenSSH server."""

from __future__ import annotations

import uuid
from typing import Any

import localcluster
import localsshd
from operator_harness import (
    OperatorProcess,
    apply,
    condition,
    connection_manifest,
    credentials_secret,
    wait_for_reason,
)


def sftp_connection(
    name: str, sshd: localsshd.SshServer, connector: str = "sftp"
) -> dict[str, Any]:
    config = {
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "knownHosts": sshd.known_hosts,
    }
    return connection_manifest(
        name,
        {"name": connector},
        config,
        f"{name}-credentials",
        verification={"checks": [{"type": "listFiles", "path": "."}]},
    )


def test_good_password_is_ready_with_server_version_and_checks(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    sshd: localsshd.SshServer,
) -> None:
    apply(
        control_plane,
        namespace,
        credentials_secret("files", password=sshd.password),
        sftp_connection("files", sshd),
    )
    obj = wait_for_reason(control_plane, namespace, "files", "Verified")
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["verification"]["details"]["serverVersion"].startswith("OpenSSH_")
    assert [(c["type"], c["result"]) for c in status["verification"]["checks"]] == [
        ("listFiles", "Succeeded")
    ]
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "sftp"
    assert sshd.password not in operator.logs()


def test_ssh_key_connector_is_ready(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    sshd: localsshd.SshServer,
) -> None:
    private_key, public_key = localsshd.generate_key()
    sshd.authorize_key(public_key)
    apply(
        control_plane,
        namespace,
        credentials_secret("keyed", privateKey=private_key),
        sftp_connection("keyed", sshd, connector="sftp-key"),
    )
    wait_for_reason(control_plane, namespace, "keyed", "Verified")
    key_body = private_key.splitlines()[1]
    assert key_body not in operator.logs()


def test_wrong_password_is_authentication_failed(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    sshd: localsshd.SshServer,
) -> None:
    canary = f"sftp-canary-{uuid.uuid4().hex}"
    apply(
        control_plane,
        namespace,
        credentials_secret("wrongpw", password=canary),
        sftp_connection("wrongpw", sshd),
    )
    obj = wait_for_reason(control_plane, namespace, "wrongpw", "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"
    assert f"rejected the password for user {sshd.username}" in condition(obj, "Ready")["message"]
    assert canary not in str(obj["status"])
    assert canary not in operator.logs()
