"""The Helm chart and the kustomize base: lint, rendering, agreement between
the two, and the chart's least-privilege identity proven on the real API
server by running the real operator with nothing but its ServiceAccount token."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
from tests.conftest import REPO_ROOT
from tests.integration.chart import (
    CHART,
    KUSTOMIZE_BASE,
    Manifest,
    helm,
    helm_binary,
    of_kind,
    operator_container,
    render,
    render_kustomize,
    rule_set,
    the,
    value_flags,
)
from tests.integration.http_server import TokenApi, serve_token_api
from tests.integration.operator_harness import OperatorProcess, get_json, wait_for, wait_for_reason
from tests.integration.test_operator_http import apply, events_for, http_connection, token_secret

# Values that switch on every optional part of the chart.
EVERYTHING_ON: dict[str, Any] = {
    "watchNamespaces": ["team-a", "team-b"],
    "peering": {"enabled": True, "name": "patchbay"},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
    "egress": {"deny": ["10.0.0.0/8"], "allow": ["192.0.2.0/24"]},
}
VALUE_SETS = {"defaults": {}, "everything-on": EVERYTHING_ON}


@pytest.fixture(scope="module")
def helm_path() -> Path:
    return helm_binary()


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_passes_helm_lint(helm_path: Path, values: dict[str, Any]) -> None:
    result = helm(helm_path, "lint", "--strict", str(CHART), *value_flags(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"logLevel": "VERBOSE"}, "logLevel"),
        ({"watchNamespace": ["team-a"]}, "watchNamespace"),
        ({"egress": {"deny": ["not-a-network"]}}, "deny"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    ],
    ids=["bad-log-level", "misspelt-key", "bad-cidr", "bad-namespace-name"],
)
def test_values_schema_rejects_invalid_values_naming_them(
    helm_path: Path, values: dict[str, Any], named: str
) -> None:
    result = helm(helm_path, "template", "patchbay", str(CHART), *value_flags(values), check=False)
    assert result.returncode != 0
    assert named in result.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_no_rbac_rule_grants_a_wildcard(helm_path: Path, values: dict[str, Any]) -> None:
    manifests = render(helm_path, values)
    roles = of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
    assert roles
    for group, resource, verb in rule_set([r for role in roles for r in role["rules"]]):
        assert "*" not in (group, resource, verb)


def test_listed_namespaces_get_roles_and_only_cluster_scoped_rules_in_the_cluster_role(
    helm_path: Path,
) -> None:
    manifests = render(helm_path, {"watchNamespaces": ["team-a", "team-b"]})
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(manifests, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    cluster_resources = {res for _, res, _ in rule_set(the(manifests, "ClusterRole")["rules"])}
    assert "secrets" not in cluster_resources
    assert "connections" not in cluster_resources
    assert operator_container(manifests)["args"][:2] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_kustomize_base_and_default_chart_agree_on_crds_rbac_and_container(
    control_plane: localcluster.ControlPlane, helm_path: Path
) -> None:
    chart = render(helm_path, include_crds=True)
    base = render_kustomize(control_plane)

    def crds(manifests: list[Manifest]) -> dict[str, Any]:
        return {
            c["metadata"]["name"]: c["spec"]
            for c in of_kind(manifests, "CustomResourceDefinition")
            if c["spec"]["group"] == "patchbay.dev"
        }

    assert crds(chart) == crds(base)
    assert len(crds(base)) == 3
    assert rule_set(the(chart, "ClusterRole")["rules"]) == rule_set(
        the(base, "ClusterRole")["rules"]
    )
    assert operator_container(chart) == operator_container(base)

    def pod_settings(manifests: list[Manifest]) -> dict[str, Any]:
        deployment = the(manifests, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        return {
            "replicas": deployment["spec"]["replicas"],
            "strategy": deployment["spec"]["strategy"],
            "securityContext": pod["securityContext"],
            "volumes": pod["volumes"],
            "serviceAccountName": pod["serviceAccountName"],
        }

    assert pod_settings(chart) == pod_settings(base)
    assert the(base, "Deployment")["metadata"]["namespace"] == "patchbay-system"


def test_kind_end_to_end_run_loads_the_image_the_chart_deploys(helm_path: Path) -> None:
    script = (REPO_ROOT / "hack" / "e2e-kind.sh").read_text()
    match = re.search(r'^IMAGE="\$\{PATCHBAY_IMAGE:-([^}]+)\}"$', script, re.MULTILINE)
    assert match, "hack/e2e-kind.sh sets IMAGE"
    assert operator_container(render(helm_path))["image"] == match.group(1)
    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/e2e-kind.yaml").read_text())
    steps = [step.get("run", "") for step in workflow["jobs"]["e2e"]["steps"]]
    assert "make e2e-kind" in steps


def test_chart_catalogue_is_the_connectors_of_deploy(helm_path: Path) -> None:
    shipped = {}
    for path in sorted((REPO_ROOT / "deploy" / "connectors").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            shipped[doc["metadata"]["name"]] = doc

    def without_labels(connector: Manifest) -> Manifest:
        meta = {k: v for k, v in connector["metadata"].items() if k != "labels"}
        return {**connector, "metadata": meta}

    rendered = {
        c["metadata"]["name"]: without_labels(c)
        for c in of_kind(render(helm_path), "ClusterConnector")
    }
    assert rendered == {name: without_labels(c) for name, c in shipped.items()}
    assert of_kind(render(helm_path, {"catalogue": {"enabled": False}}), "ClusterConnector") == []


def test_metrics_service_and_service_monitor_follow_the_metrics_values(helm_path: Path) -> None:
    assert of_kind(render(helm_path), "Service") == []
    manifests = render(helm_path, {"metrics": {"enabled": True, "port": 9090}})
    service = the(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    container = operator_container(manifests)
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert "--metrics-port=9090" in container["args"]
    assert of_kind(manifests, "ServiceMonitor") == []
    with_monitor = render(helm_path, EVERYTHING_ON)
    assert the(with_monitor, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"


def test_egress_and_peering_values_become_operator_arguments(helm_path: Path) -> None:
    args = operator_container(render(helm_path, EVERYTHING_ON))["args"]
    assert "--egress-deny=10.0.0.0/8" in args
    assert "--egress-allow=192.0.2.0/24" in args
    assert "--peering=patchbay" in args
    assert not any(a.startswith("--peering") for a in operator_container(render(helm_path))["args"])


# --- the chart's identity on the real API server ------------------------------------------------


@dataclass
class Installation:
    """The chart applied to the control plane and the operator running as its ServiceAccount."""

    release_namespace: str
    watched: str
    unwatched: str
    service_account: str
    clusterwide: bool
    manifests: list[Manifest]
    operator: OperatorProcess
    liveness_port: int

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.release_namespace}:{self.service_account}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _apply_manifests(cp: localcluster.ControlPlane, manifests: list[Manifest]) -> None:
    cp.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=helm",
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
    )


def _token_kubeconfig(cp: localcluster.ControlPlane, token: str, path: Path) -> Path:
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


@pytest.fixture(scope="module", params=["all-namespaces", "listed-namespaces"])
def installed(
    request: pytest.FixtureRequest,
    control_plane: localcluster.ControlPlane,
    helm_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    clusterwide = request.param == "all-namespaces"
    release = f"pb-{uuid.uuid4().hex[:8]}"
    release_namespace, watched, unwatched = (f"{release}-{s}" for s in ("system", "apps", "other"))
    for ns in (release_namespace, watched, unwatched):
        control_plane.kubectl("create", "namespace", ns)
    liveness_port = _free_port()
    values: dict[str, Any] = {
        "liveness": {"port": liveness_port},
        "peering": {"enabled": True, "name": release},
    }
    if not clusterwide:
        values["watchNamespaces"] = [watched]
    manifests = render(
        helm_path, values, release=release, namespace=release_namespace, include_crds=True
    )
    crds = of_kind(manifests, "CustomResourceDefinition")
    rest = [m for m in manifests if m["kind"] != "CustomResourceDefinition"]
    _apply_manifests(control_plane, crds)
    control_plane.kubectl("wait", "--for", "condition=Established", "crd", "--all", "--timeout=60s")
    _apply_manifests(control_plane, rest)

    service_account = the(manifests, "ServiceAccount")["metadata"]["name"]
    token = control_plane.kubectl(
        "create", "token", service_account, "-n", release_namespace, "--duration=2h"
    ).stdout.strip()
    workdir = tmp_path_factory.mktemp(request.param)
    kubeconfig = _token_kubeconfig(control_plane, token, workdir / "kubeconfig")
    # The chart's own arguments; the liveness endpoint on loopback only.
    args = [
        a.replace("http://0.0.0.0:", "http://127.0.0.1:")
        for a in operator_container(manifests)["args"]
    ]
    operator = OperatorProcess(
        control_plane, workdir / "operator.log", *args, kubeconfig=kubeconfig
    )
    try:
        yield Installation(
            release_namespace=release_namespace,
            watched=watched,
            unwatched=unwatched,
            service_account=service_account,
            clusterwide=clusterwide,
            manifests=rest,
            operator=operator,
            liveness_port=liveness_port,
        )
    finally:
        operator.stop()
        for kind in ("ClusterRoleBinding", "ClusterRole", "ClusterKopfPeering"):
            for m in of_kind(rest, kind):
                control_plane.kubectl(
                    "delete", kind.lower(), m["metadata"]["name"], "--ignore-not-found", check=False
                )
        for ns in (release_namespace, watched, unwatched):
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def token() -> str:
    return f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def api(token: str) -> Iterator[TokenApi]:
    with serve_token_api(token) as server:
        yield server


def _name() -> str:
    return f"conn-{uuid.uuid4().hex[:6]}"


# kopf's own complaints, and the reconciler's (it logs only the type of an API error).
PERMISSION_TROUBLE = re.compile(
    r"forbidden|not enough permissions|\b403\b|KubeApiError", re.IGNORECASE
)


def test_operator_with_chart_identity_makes_connection_ready(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, secret = _name(), _name()
    apply(
        control_plane,
        installed.watched,
        token_secret(secret, token),
        http_connection(name, api.base_url, secret=secret),
    )
    obj = wait_for_reason(control_plane, installed.watched, name, "Verified")
    assert obj["metadata"]["labels"]["patchbay.dev/driver"] == "http"
    binding = get_json(control_plane, "secret", f"{name}-binding", "-n", installed.watched)
    assert base64.b64decode(binding["data"]["token"]).decode() == token
    assert [e["reason"] for e in events_for(control_plane, installed.watched, name)] == ["Verified"]
    with urllib.request.urlopen(
        f"http://127.0.0.1:{installed.liveness_port}/healthz", timeout=5
    ) as response:
        assert response.status == 200
    assert not PERMISSION_TROUBLE.search(installed.operator.logs())


def test_operator_with_chart_identity_reports_wrong_credentials(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi
) -> None:
    name, secret = _name(), _name()
    apply(
        control_plane,
        installed.watched,
        token_secret(secret, "wrong-token-value"),
        http_connection(name, api.base_url, secret=secret),
    )
    obj = wait_for_reason(control_plane, installed.watched, name, "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"


def test_operator_with_chart_identity_reverifies_a_rotated_secret(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, secret = _name(), _name()
    apply(
        control_plane,
        installed.watched,
        token_secret(secret, "stale-token-value"),
        http_connection(name, api.base_url, secret=secret),
    )
    wait_for_reason(control_plane, installed.watched, name, "AuthenticationFailed")
    apply(control_plane, installed.watched, token_secret(secret, token))
    wait_for_reason(control_plane, installed.watched, name, "Verified")


def test_deleting_connection_removes_its_binding_secret_without_secret_delete_rights(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, secret = _name(), _name()
    apply(
        control_plane,
        installed.watched,
        token_secret(secret, token),
        http_connection(name, api.base_url, secret=secret),
    )
    wait_for_reason(control_plane, installed.watched, name, "Verified")
    control_plane.kubectl("delete", "connection", name, "-n", installed.watched)

    def binding_gone() -> bool:
        result = control_plane.kubectl(
            "get", "secret", f"{name}-binding", "-n", installed.watched, check=False
        )
        return "NotFound" in result.stderr

    wait_for(binding_gone, "the garbage collector to delete the binding Secret")
    control_plane.kubectl("get", "secret", secret, "-n", installed.watched)


def _can_i(
    cp: localcluster.ControlPlane, installed: Installation, verb: str, resource: str, namespace: str
) -> bool:
    result = cp.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={installed.user}", check=False
    )
    return result.stdout.strip() == "yes"


def test_chart_identity_can_never_delete_or_rewrite_secrets(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    assert _can_i(control_plane, installed, "patch", "secrets", installed.watched)
    for verb in ("delete", "deletecollection", "update"):
        assert not _can_i(control_plane, installed, verb, "secrets", installed.watched), verb
    assert not _can_i(control_plane, installed, "*", "*", installed.watched)
    assert not _can_i(control_plane, installed, "delete", "connections", installed.watched)


def test_chart_identity_reads_secrets_only_where_it_watches(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    assert _can_i(control_plane, installed, "get", "secrets", installed.watched)
    for namespace in (installed.unwatched, installed.release_namespace):
        for verb in ("get", "list", "watch"):
            allowed = _can_i(control_plane, installed, verb, "secrets", namespace)
            assert allowed is installed.clusterwide, (verb, namespace)


def test_applied_rbac_rules_have_no_wildcards(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    roles = [
        get_json(control_plane, "clusterrole", m["metadata"]["name"])
        for m in of_kind(installed.manifests, "ClusterRole")
    ] + [
        get_json(control_plane, "role", m["metadata"]["name"], "-n", m["metadata"]["namespace"])
        for m in of_kind(installed.manifests, "Role")
    ]
    assert len(roles) == (1 if installed.clusterwide else 2)
    for group, resource, verb in rule_set([r for role in roles for r in role["rules"]]):
        assert "*" not in (group, resource, verb)


def test_kustomize_base_applies_to_the_api_server_with_the_same_limits(
    control_plane: localcluster.ControlPlane,
) -> None:
    manifests = render_kustomize(control_plane)
    try:
        control_plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "-k", str(KUSTOMIZE_BASE)
        )
        deployment = get_json(control_plane, "deployment", "patchbay", "-n", "patchbay-system")
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        user = "--as=system:serviceaccount:patchbay-system:patchbay"
        can_i = ("auth", "can-i", "-n", "default", user)
        assert control_plane.kubectl(*can_i, "patch", "secrets").stdout.strip() == "yes"
        denied = control_plane.kubectl(*can_i, "delete", "secrets", check=False)
        assert denied.stdout.strip() == "no"
    finally:
        for m in manifests:
            if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                control_plane.kubectl(
                    "delete", m["kind"].lower(), m["metadata"]["name"], "--ignore-not-found"
                )
        control_plane.kubectl("delete", "namespace", "patchbay-system", "--wait=false")
