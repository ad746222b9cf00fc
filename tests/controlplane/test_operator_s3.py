"""The operator verifies Connections on the s3 ClusterConnector against a real MinIO server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import localcluster
import locals3
from operator_harness import (
    OperatorProcess,
    apply,
    binding_type,
    condition,
    connection_manifest,
    secret_manifest,
    wait_for_reason,
)

BUCKET = f"landing-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def s3(s3_server: locals3.S3Server) -> locals3.S3Server:
    s3_server.create_bucket(BUCKET)
    s3_server.put_object(BUCKET, "incoming/orders.csv", b"id\n1\n")
    return s3_server


def s3_connection(name: str, endpoint: str, **spec: Any) -> dict[str, Any]:
    config = {"endpoint": endpoint, "bucket": BUCKET, "pathStyle": True}
    ref = {"kind": "ClusterConnector", "name": "s3"}
    return connection_manifest(name, ref, config, f"{name}-keys", **spec)


def keys_secret(name: str, access_key_id: str, secret_access_key: str) -> dict[str, Any]:
    return secret_manifest(
        f"{name}-keys", accessKeyId=access_key_id, secretAccessKey=secret_access_key
    )


def test_good_keys_are_ready_with_checks_and_an_s3_binding(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    s3: locals3.S3Server,
) -> None:
    checks = [
        {"type": "listFiles", "path": "/incoming"},
        {"type": "readObject", "path": "/incoming/orders.csv"},
    ]
    apply(
        control_plane,
        namespace,
        keys_secret("landing", s3.root.access_key_id, s3.root.secret_access_key),
        s3_connection("landing", s3.endpoint, verification={"checks": checks}),
    )
    obj = wait_for_reason(control_plane, namespace, "landing", "Verified")
    assert obj["status"]["phase"] == "Ready"
    assert obj["status"]["verification"]["details"]["serverVersion"] == "MinIO"
    assert [c["result"] for c in obj["status"]["verification"]["checks"]] == ["Succeeded"] * 2
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "s3"
    assert binding_type(control_plane, namespace, "landing") == "servicebinding.io/s3"
    assert s3.root.secret_access_key not in operator.logs()


def test_wrong_secret_key_is_authentication_failed(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    s3: locals3.S3Server,
) -> None:
    canary = f"s3-canary-{uuid.uuid4().hex}"
    apply(
        control_plane,
        namespace,
        keys_secret("wrongkey", s3.root.access_key_id, canary),
        s3_connection("wrongkey", s3.endpoint),
    )
    obj = wait_for_reason(control_plane, namespace, "wrongkey", "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"
    assert "SignatureDoesNotMatch" in condition(obj, "Ready")["message"]
    assert canary not in str(obj)
    assert canary not in operator.logs()
