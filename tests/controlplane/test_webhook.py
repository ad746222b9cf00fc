"""The API server calls the operator's validating webhook over loopback: a
credential written inline in spec.config is refused before it is stored."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
import localwebhooks
from operator_harness import (
    OperatorProcess,
    connection_manifest,
    get_json,
    wait_for_reason,
)
from tests.conftest import REPO_ROOT


def connection(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """An http-api Connection with ``config`` as written, for the webhook to judge."""
    ref = {"kind": "ClusterConnector", "name": "http-api"}
    return connection_manifest(name, ref, config, "api-token")


def apply(
    cp: localcluster.ControlPlane, namespace: str, obj: dict[str, Any], *flags: str
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "apply", "-n", namespace, *flags, "-f", "-", input=yaml.safe_dump(obj), check=False
    )


@pytest.fixture
def webhook(
    control_plane: localcluster.ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    serving = localwebhooks.serving(tmp_path / "webhook")
    process = OperatorProcess(
        control_plane, tmp_path / "operator.log", "-n", namespace, *serving.operator_args()
    )
    name = localwebhooks.register(control_plane, serving, namespace)
    try:
        localwebhooks.wait_effective(control_plane, namespace)
        yield process
    finally:
        localwebhooks.unregister(control_plane, name)
        process.stop()


def test_inline_password_is_refused_at_admission_and_nothing_is_stored(
    control_plane: localcluster.ControlPlane, namespace: str, webhook: OperatorProcess
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    leaky = connection("leaky", {"baseUrl": "http://127.0.0.1:9", "token": canary})

    result = apply(control_plane, namespace, leaky)
    assert result.returncode != 0
    assert "variable 'token'" in result.stderr
    assert "must come from a Secret" in result.stderr
    assert canary not in result.stderr + result.stdout
    missing = control_plane.kubectl("get", "connection", "leaky", "-n", namespace, check=False)
    assert "NotFound" in missing.stderr
    assert canary not in webhook.logs()


def test_config_breaking_variable_rules_is_refused_naming_the_variable(
    control_plane: localcluster.ControlPlane, namespace: str, webhook: OperatorProcess
) -> None:
    good = connection("good", {"baseUrl": "http://127.0.0.1:9"})
    assert apply(control_plane, namespace, good).returncode == 0
    unknown = connection("good", {"baseUrl": "http://127.0.0.1:9", "colour": "red"})
    refused = apply(control_plane, namespace, unknown)
    assert refused.returncode != 0
    assert "variable 'colour': is not a variable of this connector" in refused.stderr

    missing = apply(control_plane, namespace, connection("bare", {}))
    assert missing.returncode != 0
    assert "variable 'baseUrl': is required" in missing.stderr

    # an edit that leaves config alone is admitted, as is the operator's own labelling
    control_plane.kubectl("label", "connection", "good", "-n", namespace, "team=data")
    stored = control_plane.kubectl(
        "get", "connection", "good", "-n", namespace, "-o", "jsonpath={.spec.config}"
    )
    assert "colour" not in stored.stdout


def test_connections_are_labelled_at_admission_without_a_patch_from_the_operator(
    control_plane: localcluster.ControlPlane, namespace: str, webhook: OperatorProcess
) -> None:
    created = apply(
        control_plane, namespace, connection("labelled", {"baseUrl": "http://127.0.0.1:9"})
    )
    assert created.returncode == 0, created.stderr
    obj = get_json(control_plane, "connection", "labelled", "-n", namespace)
    assert obj["metadata"]["labels"] == {
        "patchbay.dev/connector": "http-api",
        "patchbay.dev/driver": "http",
    }
    wait_for_reason(control_plane, namespace, "labelled", "SecretNotFound")
    obj = get_json(
        control_plane, "connection", "labelled", "-n", namespace, "--show-managed-fields"
    )
    # the operator's own writes to this Connection: status only, no labels patch
    written = {
        entry.get("subresource", "")
        for entry in obj["metadata"]["managedFields"]
        if entry["manager"] == "patchbay"
    }
    assert written == {"status"}
