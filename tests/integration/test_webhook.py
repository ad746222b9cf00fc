"""The API server calls the operator's validating webhook over loopback: a
credential written inline in spec.config is refused before it is stored."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
from testpki import CertificateAuthority, subject_alternative_names
from tests.conftest import REPO_ROOT
from tests.integration.operator_harness import OperatorProcess, wait_for


def connection(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": name},
        "spec": {
            "connectorRef": {"kind": "ClusterConnector", "name": "http-api"},
            "config": config,
            "credentials": {"secretRef": {"name": "api-token"}},
        },
    }


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
    ca = CertificateAuthority.create("patchbay-webhook-test-ca")
    cert, key = ca.issue(
        "patchbay-webhook", server=True, sans=subject_alternative_names("127.0.0.1")
    )
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = localcluster.free_port()
    process = OperatorProcess(
        control_plane,
        tmp_path / "operator.log",
        "-n",
        namespace,
        "--webhook-host",
        "127.0.0.1",
        "--webhook-port",
        str(port),
        "--webhook-cert",
        str(tmp_path / "tls.crt"),
        "--webhook-key",
        str(tmp_path / "tls.key"),
    )
    name = f"patchbay-test-{uuid.uuid4().hex[:8]}"
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "connections.patchbay.dev",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate-connection",
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["patchbay.dev"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["connections"],
                    }
                ],
                # only this test's namespace: other tests run without the webhook
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(configuration))
    try:
        yield process
    finally:
        control_plane.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        process.stop()


def test_inline_password_is_refused_at_admission_and_nothing_is_stored(
    control_plane: localcluster.ControlPlane, namespace: str, webhook: OperatorProcess
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    leaky = connection("leaky", {"baseUrl": "http://127.0.0.1:9", "token": canary})

    # the operator needs a moment to serve; until then the API server cannot reach it
    result = wait_for(
        lambda: (
            (r := apply(control_plane, namespace, leaky)).returncode != 0
            and "validate-connection" not in r.stderr
            and "spec.config" in r.stderr
            and r
        ),
        "the webhook to refuse the inline token",
    )
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
    wait_for(
        lambda: apply(control_plane, namespace, good).returncode == 0,
        "the webhook to admit a valid Connection",
    )
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
