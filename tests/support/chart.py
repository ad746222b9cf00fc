"""Rendering the Helm chart and the kustomize base for tests."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.conftest import REPO_ROOT

import localcluster

CHART = REPO_ROOT / "charts" / "patchbay"
KUSTOMIZE_BASE = REPO_ROOT / "deploy" / "base"
KUSTOMIZE_WEBHOOK = REPO_ROOT / "deploy" / "overlays" / "webhook-cert-manager"

Manifest = dict[str, Any]
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def helm_binary() -> Path:
    """The pinned helm, built on first use by hack/build-helm.sh (a no-op when cached)."""
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True
    )
    return Path(result.stdout.strip())


def helm(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check)


def value_flags(values: dict[str, Any]) -> list[str]:
    """`--set-json` flags for top-level values; Helm merges them into the defaults."""
    flags: list[str] = []
    for key, value in values.items():
        flags += ["--set-json", f"{key}={json.dumps(value)}"]
    return flags


def render(
    binary: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "patchbay",
    namespace: str = "patchbay-system",
    include_crds: bool = False,
    cluster: localcluster.ControlPlane | None = None,
) -> list[Manifest]:
    """`helm template`; given a cluster, rendered as `helm upgrade` would (lookups answered)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    if cluster is not None:
        args += ["--dry-run=server", "--kubeconfig", str(cluster.kubeconfig)]
    result = helm(binary, *args, *value_flags(values or {}))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_kustomize(cp: localcluster.ControlPlane, path: Path = KUSTOMIZE_BASE) -> list[Manifest]:
    """deploy/base (or an overlay) through kubectl's built-in kustomize (no cluster involved)."""
    result = cp.kubectl("kustomize", str(path))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def the(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def operator_container(manifests: list[Manifest]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = the(manifests, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Rules flattened to (apiGroup, resource, verb) triples, so equal grants compare equal."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def mounted_secret(manifests: list[Manifest]) -> tuple[str, str]:
    """The Secret mounted for the webhook's certificate, and where it is mounted."""
    pod = the(manifests, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    mount = next(
        m for m in operator_container(manifests)["volumeMounts"] if m["name"] == volume["name"]
    )
    assert mount["readOnly"] is True
    return volume["secret"]["secretName"], mount["mountPath"]


def decoded(secret: Manifest, key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def apply_manifests(cp: localcluster.ControlPlane, manifests: list[Manifest]) -> None:
    cp.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=helm",
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
    )


def install_without_webhooks(
    cp: localcluster.ControlPlane, manifests: list[Manifest], namespace: str
) -> str:
    """Apply a rendered release but its webhook configurations (the API server cannot
    reach a Service here: there are no Pods), and return a token of its ServiceAccount."""
    crds = of_kind(manifests, "CustomResourceDefinition")
    rest = [m for m in manifests if m["kind"] not in {"CustomResourceDefinition", *WEBHOOK_KINDS}]
    apply_manifests(cp, crds)
    cp.kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s")
    apply_manifests(cp, rest)
    service_account = the(manifests, "ServiceAccount")["metadata"]["name"]
    return cp.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=2h"
    ).stdout.strip()


def token_kubeconfig(cp: localcluster.ControlPlane, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster with the ServiceAccount token as the only credential."""
    admin = json.loads(cp.kubeconfig.read_text())
    config = {
        **admin,
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path
