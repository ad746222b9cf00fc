"""Registers the operator's admission webhooks with a local control plane.

The operator serves them over HTTPS on a loopback port with a certificate from a
throwaway CA; the configurations point the API server at that URL and apply only
to one namespace, so other tests and rounds run without them.
"""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster import ControlPlane
from localserver import free_port
from testpki import CertificateAuthority, subject_alternative_names

# (kind, path served by the operator, failurePolicy), as the chart registers them
WEBHOOKS = (
    ("ValidatingWebhookConfiguration", "validate-connection", "Fail"),
    ("MutatingWebhookConfiguration", "authorize-connection", "Fail"),
    ("MutatingWebhookConfiguration", "label-connection", "Ignore"),
)
KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
# where the operator keeps the key of admission records, out of the tests' namespaces
ADMISSION_KEY = "default/patchbay-admission-key"


@dataclass(frozen=True)
class WebhookServing:
    port: int
    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def operator_args(self) -> list[str]:
        """`patchbay run` flags that serve the webhooks on loopback."""
        return [
            "--webhook-host",
            "127.0.0.1",
            "--webhook-port",
            str(self.port),
            "--webhook-cert",
            str(self.cert_file),
            "--webhook-key",
            str(self.key_file),
            "--admission-key",
            ADMISSION_KEY,
        ]


def serving(directory: Path) -> WebhookServing:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("patchbay-webhook-ca")
    cert, key = ca.issue(
        "patchbay-webhook", server=True, sans=subject_alternative_names("127.0.0.1")
    )
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return WebhookServing(free_port(), ca.cert_pem, directory / "tls.crt", directory / "tls.key")


def _configuration(kind: str, name: str, serving: WebhookServing, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{path}.patchbay.dev",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{serving.port}/{path}",
                    "caBundle": base64.b64encode(serving.ca_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["patchbay.dev"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["connections"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
            for webhook_kind, path, failure_policy in WEBHOOKS
            if webhook_kind == kind
        ],
    }


def register(cp: ControlPlane, serving: WebhookServing, namespace: str) -> str:
    """Both configurations, named after the returned name."""
    name = f"patchbay-{namespace}-{uuid.uuid4().hex[:6]}"
    for kind in KINDS:
        manifest = _configuration(kind, name, serving, namespace)
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return name


def unregister(cp: ControlPlane, name: str) -> None:
    for kind in KINDS:
        cp.kubectl("delete", kind, name, "--ignore-not-found", check=False)


def _dry_run(
    cp: ControlPlane, namespace: str, config: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    probe = {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": "webhook-probe"},
        "spec": {
            "connectorRef": {"kind": "ClusterConnector", "name": "http-api"},
            "config": config,
        },
    }
    return cp.kubectl(
        "create",
        "-n",
        namespace,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(probe),
        check=False,
    )


def wait_effective(cp: ControlPlane, namespace: str, timeout: float = 60.0) -> None:
    """Until the operator serves and the API server uses both webhooks (needs the
    http-api ClusterConnector): a Connection missing its base URL is refused and a
    valid one comes back labelled."""
    deadline = time.monotonic() + timeout
    while True:
        refused = _dry_run(cp, namespace, {})
        admitted = _dry_run(cp, namespace, {"baseUrl": "http://127.0.0.1:9"})
        if "denied the request" in refused.stderr and "patchbay.dev/driver" in admitted.stdout:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"webhooks not effective: {refused.stderr.strip()}")
        time.sleep(0.3)
