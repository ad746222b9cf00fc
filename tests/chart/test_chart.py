"""The Helm chart and the kustomize base: lint, rendering (metrics, admission
webhooks and their certificate), agreement between the two, and the chart's
least-privilege identity proven on the real API server by running the real
operator with nothing but its ServiceAccount token and the chart's arguments."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

import localcluster
from chart import (
    CHART,
    KUSTOMIZE_BASE,
    KUSTOMIZE_WEBHOOK,
    WEBHOOK_KINDS,
    Manifest,
    apply_manifests,
    decoded,
    helm,
    helm_binary,
    install_without_webhooks,
    mounted_secret,
    named,
    of_kind,
    operator_container,
    render,
    render_kustomize,
    rule_set,
    the,
    token_kubeconfig,
    value_flags,
)
from http_server import TokenApi
from localserver import free_port
from operator_harness import (
    OperatorProcess,
    apply,
    apply_http_connection,
    events_for,
    get_json,
    http_connection,
    token_secret,
    wait_for,
    wait_for_binding_deleted,
    wait_for_reason,
)
from tests.conftest import REPO_ROOT

# Values that switch on every optional part of the chart.
EVERYTHING_ON: dict[str, Any] = {
    "watchNamespaces": ["team-a", "team-b"],
    "peering": {"enabled": True, "name": "patchbay"},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
    "egress": {"deny": ["10.0.0.0/8"], "allow": ["192.0.2.0/24"]},
}
WEBHOOK_OFF: dict[str, Any] = {"webhook": {"enabled": False}}
CERT_MANAGER: dict[str, Any] = {"webhook": {"certManager": {"enabled": True}}}
# One operator without peering: what deploy/base (and its overlay) still deploys.
SINGLE_REPLICA: dict[str, Any] = {
    "replicas": 1,
    "peering": {"enabled": False, "name": "patchbay"},
    "shutdownDelaySeconds": 0,
}
VALUE_SETS = {
    "defaults": {},
    "everything-on": EVERYTHING_ON,
    "webhook-off": WEBHOOK_OFF,
    "cert-manager": {**EVERYTHING_ON, **CERT_MANAGER},
    "single-replica": SINGLE_REPLICA,
}


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
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"replicas": 0}, "replicas"),
        ({"podDisruptionBudget": {"enabled": True, "minAvailable": 0}}, "minAvailable"),
    ],
    ids=[
        "bad-log-level",
        "misspelt-key",
        "bad-cidr",
        "bad-namespace-name",
        "bad-failure-policy",
        "no-replicas",
        "empty-disruption-budget",
    ],
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
    roles = [r for r in of_kind(manifests, "Role") if r["metadata"]["name"] == "patchbay"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in of_kind(manifests, "RoleBinding") if b["metadata"]["name"] == "patchbay"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    key_role = named(manifests, "Role", "patchbay-admission-key")
    assert key_role["metadata"]["namespace"] == "patchbay-system"
    assert key_role["rules"][0]["resourceNames"] == ["patchbay-admission-key"]
    cluster_resources = {
        res for _, res, _ in rule_set(named(manifests, "ClusterRole", "patchbay")["rules"])
    }
    assert "secrets" not in cluster_resources
    assert "connections" not in cluster_resources
    assert operator_container(manifests)["args"][:2] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def _pod_settings(manifests: list[Manifest]) -> dict[str, Any]:
    deployment = the(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    return {
        "replicas": deployment["spec"]["replicas"],
        "strategy": deployment["spec"]["strategy"],
        "securityContext": pod["securityContext"],
        "volumes": sorted(pod["volumes"], key=lambda v: v["name"]),
        "serviceAccountName": pod["serviceAccountName"],
    }


def _services(manifests: list[Manifest]) -> dict[str, Any]:
    return {s["metadata"]["name"]: s["spec"] for s in of_kind(manifests, "Service")}


def test_kustomize_base_agrees_with_a_single_chart_replica_without_webhook(
    control_plane: localcluster.ControlPlane, helm_path: Path
) -> None:
    # kustomize cannot generate the webhook's certificate: the base has no webhook
    chart = render(helm_path, {**SINGLE_REPLICA, **WEBHOOK_OFF}, include_crds=True)
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
    assert _pod_settings(chart) == _pod_settings(base)
    assert _services(chart) == _services(base) != {}
    assert the(base, "Deployment")["metadata"]["namespace"] == "patchbay-system"
    for kind in (*WEBHOOK_KINDS, "Secret"):
        assert of_kind(base, kind) == of_kind(chart, kind) == []


def test_kustomize_webhook_overlay_agrees_with_a_single_chart_replica_using_cert_manager(
    control_plane: localcluster.ControlPlane, helm_path: Path
) -> None:
    chart = render(helm_path, {**SINGLE_REPLICA, **CERT_MANAGER})
    overlay = render_kustomize(control_plane, KUSTOMIZE_WEBHOOK)

    def container(manifests: list[Manifest]) -> dict[str, Any]:
        # strategic merge patches put the overlay's ports and mounts first; order means nothing
        found = dict(operator_container(manifests))
        for key in ("ports", "volumeMounts"):
            found[key] = sorted(found[key], key=lambda item: item["name"])
        return found

    assert container(chart) == container(overlay)
    assert _pod_settings(chart) == _pod_settings(overlay)
    assert _services(chart) == _services(overlay)
    for kind in ("Issuer", "Certificate"):
        assert the(chart, kind)["metadata"]["name"] == the(overlay, kind)["metadata"]["name"]
        assert the(chart, kind)["spec"] == the(overlay, kind)["spec"]
    for kind in WEBHOOK_KINDS:
        assert the(chart, kind)["webhooks"] == the(overlay, kind)["webhooks"]
        assert (
            the(chart, kind)["metadata"]["annotations"]
            == (the(overlay, kind)["metadata"]["annotations"])
        )


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


def test_metrics_are_served_by_default_behind_their_own_service(helm_path: Path) -> None:
    manifests = render(helm_path)
    service = named(manifests, "Service", "patchbay-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    container = operator_container(manifests)
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert "--metrics-port=8080" in container["args"]
    assert of_kind(manifests, "ServiceMonitor") == []

    moved = operator_container(render(helm_path, {"metrics": {"port": 9090}}))
    assert "--metrics-port=9090" in moved["args"]

    off = render(helm_path, {"metrics": {"enabled": False}})
    assert "patchbay-metrics" not in [s["metadata"]["name"] for s in of_kind(off, "Service")]
    assert not any(a.startswith("--metrics") for a in operator_container(off)["args"])


def test_service_monitor_scrapes_only_the_metrics_service(helm_path: Path) -> None:
    manifests = render(helm_path, EVERYTHING_ON)
    monitor = the(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in of_kind(manifests, "Service")
        if wanted.items() <= s["metadata"]["labels"].items()
    ]
    assert selected == ["patchbay-metrics"]


def test_egress_and_peering_values_become_operator_arguments(helm_path: Path) -> None:
    args = operator_container(render(helm_path, EVERYTHING_ON))["args"]
    assert "--egress-deny=10.0.0.0/8" in args
    assert "--egress-allow=192.0.2.0/24" in args
    assert "--peering=patchbay" in args
    alone = operator_container(render(helm_path, SINGLE_REPLICA))["args"]
    assert not any(a.startswith("--peering") for a in alone)


# --- availability ------------------------------------------------------------------------------


def _pod_template(manifests: list[Manifest]) -> dict[str, Any]:
    template: dict[str, Any] = the(manifests, "Deployment")["spec"]["template"]
    return template


def test_default_install_runs_two_peered_replicas_rolling_a_new_pod_in_before_an_old_one_goes(
    helm_path: Path,
) -> None:
    manifests = render(helm_path)
    deployment = the(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(manifests)
    assert "--peering=patchbay" in container["args"]
    assert the(manifests, "ClusterKopfPeering")["metadata"]["name"] == "patchbay"
    # every replica is a peer of its own, named after its pod
    assert {
        "name": "POD_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    } in container["env"]


def test_loopback_is_denied_to_verification_by_default(helm_path: Path) -> None:
    args = operator_container(render(helm_path))["args"]
    assert "--egress-deny=127.0.0.0/8" in args
    assert "--egress-deny=::1/128" in args
    opened = operator_container(render(helm_path, {"egress": {"deny": []}}))["args"]
    assert not any(a.startswith("--egress-deny") for a in opened)


def test_network_policy_is_off_by_default_and_admits_only_the_operator_ports(
    control_plane: localcluster.ControlPlane, helm_path: Path
) -> None:
    assert of_kind(render(helm_path), "NetworkPolicy") == []
    manifests = render(
        helm_path,
        {
            "networkPolicy": {
                "enabled": True,
                "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
            }
        },
    )
    policy = the(manifests, "NetworkPolicy")
    spec = policy["spec"]
    assert (
        spec["podSelector"]["matchLabels"]
        == the(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    webhook, probes = spec["ingress"]
    assert webhook == {"ports": [{"port": 9443, "protocol": "TCP"}]}
    assert probes["ports"] == [{"port": 8081, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"}]
    assert probes["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]
    blocks = [peer["ipBlock"] for peer in spec["egress"][0]["to"]]
    assert blocks == [
        {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]},
        {"cidr": "::/0", "except": ["fe80::/10"]},
    ]
    # the API server accepts it as rendered
    policy["metadata"]["namespace"] = "default"
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(policy))


def test_disruption_budget_keeps_a_replica_through_voluntary_disruptions(helm_path: Path) -> None:
    manifests = render(helm_path)
    budget = the(manifests, "PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == "patchbay-system"
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert (
        budget["spec"]["selector"]
        == the(manifests, "Deployment")["spec"]["selector"]
        == {
            "matchLabels": {
                "app.kubernetes.io/name": "patchbay",
                "app.kubernetes.io/instance": "patchbay",
            }
        }
    )
    off = render(helm_path, {"podDisruptionBudget": {"enabled": False, "minAvailable": 1}})
    assert of_kind(off, "PodDisruptionBudget") == []


def test_replicas_spread_over_nodes_unless_told_otherwise(helm_path: Path) -> None:
    spread = _pod_template(render(helm_path))["spec"]["topologySpreadConstraints"]
    assert spread == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "patchbay",
                    "app.kubernetes.io/instance": "patchbay",
                }
            },
        }
    ]
    zones = [{**spread[0], "topologyKey": "topology.kubernetes.io/zone"}]
    chosen = _pod_template(render(helm_path, {"topologySpreadConstraints": zones}))
    assert chosen["spec"]["topologySpreadConstraints"] == zones


def test_webhook_service_sends_admissions_to_every_ready_replica(helm_path: Path) -> None:
    manifests = render(helm_path)
    selector = named(manifests, "Service", "patchbay-webhook")["spec"]["selector"]
    # the Deployment's own selector: no label tells the working replica from the others
    assert selector == the(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= _pod_template(manifests)["metadata"]["labels"].items()
    container = operator_container(manifests)
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    # a stopping pod keeps answering while it leaves the Service's endpoints
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}


def test_a_single_replica_without_peering_is_recreated_without_budget_or_spread(
    helm_path: Path,
) -> None:
    manifests = render(helm_path, SINGLE_REPLICA)
    deployment = the(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "topologySpreadConstraints" not in _pod_template(manifests)["spec"]
    assert "lifecycle" not in operator_container(manifests)
    for kind in ("PodDisruptionBudget", "ClusterKopfPeering", "KopfPeering"):
        assert of_kind(manifests, kind) == [], kind
    # one replica with peering still rolls, and a budget of one would block every drain
    peered = render(helm_path, {"replicas": 1})
    assert the(peered, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert of_kind(peered, "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"replicas": 2, "peering": {"enabled": False, "name": "patchbay"}},
            "replicas above 1 need peering.enabled",
        ),
        (
            {"replicas": 2, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}},
            "podDisruptionBudget.minAvailable must be below replicas",
        ),
    ],
    ids=["replicas-without-peering", "budget-blocking-every-drain"],
)
def test_values_that_would_break_availability_are_refused_saying_why(
    helm_path: Path, values: dict[str, Any], message: str
) -> None:
    result = helm(helm_path, "template", "patchbay", str(CHART), *value_flags(values), check=False)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("watched", [[], ["team-a", "team-b"]], ids=["all-namespaces", "listed"])
def test_peering_rbac_lets_the_operator_patch_only_its_own_peering_object(
    helm_path: Path, watched: list[str]
) -> None:
    manifests = render(
        helm_path, {"watchNamespaces": watched, "peering": {"enabled": True, "name": "pb-peers"}}
    )
    resource = "kopfpeerings" if watched else "clusterkopfpeerings"
    wanted = [
        {"apiGroups": ["kopf.dev"], "resources": [resource], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["kopf.dev"],
            "resources": [resource],
            "resourceNames": ["pb-peers"],
            "verbs": ["get", "patch"],
        },
    ]
    roles = [
        role
        for role in of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
        if role["metadata"]["name"] == "patchbay"
    ]
    granted = {
        (role["kind"], role["metadata"].get("namespace")): [
            rule for rule in role["rules"] if rule["apiGroups"] == ["kopf.dev"]
        ]
        for role in roles
    }
    if watched:
        per_namespace: dict[tuple[str, str | None], list[dict[str, Any]]] = {
            ("Role", ns): wanted for ns in watched
        }
        assert granted == {("ClusterRole", None): [], **per_namespace}
        objects = of_kind(manifests, "KopfPeering")
        assert sorted(o["metadata"]["namespace"] for o in objects) == watched
    else:
        assert granted == {("ClusterRole", None): wanted}
        objects = of_kind(manifests, "ClusterKopfPeering")
    assert {o["metadata"]["name"] for o in objects} == {"pb-peers"}


# --- the admission webhooks --------------------------------------------------------------------


# (kind, webhook, path) of every admission webhook the chart registers
WEBHOOKS = (
    ("ValidatingWebhookConfiguration", "validate-connection.patchbay.dev", "/validate-connection"),
    ("MutatingWebhookConfiguration", "authorize-connection.patchbay.dev", "/authorize-connection"),
    ("MutatingWebhookConfiguration", "label-connection.patchbay.dev", "/label-connection"),
)


def _webhook(
    manifests: list[Manifest], kind: str, name: str = "validate-connection.patchbay.dev"
) -> dict[str, Any]:
    webhooks: list[dict[str, Any]] = the(manifests, kind)["webhooks"]
    (webhook,) = (w for w in webhooks if w["name"] == name)
    return webhook


def _webhooks(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [_webhook(manifests, kind, name) for kind, name, _ in WEBHOOKS]


def test_webhooks_call_the_operator_through_its_service_on_their_paths(helm_path: Path) -> None:
    manifests = render(helm_path)
    service = named(manifests, "Service", "patchbay-webhook")
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    container = operator_container(manifests)
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    secret_name, mount_path = mounted_secret(manifests)
    assert "--webhook-port=9443" in container["args"]
    assert f"--webhook-cert={mount_path}/tls.crt" in container["args"]
    assert f"--webhook-key={mount_path}/tls.key" in container["args"]
    assert "--admission-key=patchbay-system/patchbay-admission-key" in container["args"]
    assert named(manifests, "Secret", secret_name)["type"] == "kubernetes.io/tls"

    assert [
        w["name"] for m in of_kind(manifests, "MutatingWebhookConfiguration") for w in m["webhooks"]
    ] == [
        "authorize-connection.patchbay.dev",
        "label-connection.patchbay.dev",
    ]
    for kind, name, path in WEBHOOKS:
        webhook = _webhook(manifests, kind, name)
        assert webhook["clientConfig"]["service"] == {
            "name": "patchbay-webhook",
            "namespace": "patchbay-system",
            "path": path,
            "port": 443,
        }
        assert webhook["rules"] == [
            {
                "apiGroups": ["patchbay.dev"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["connections"],
            }
        ]
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert "namespaceSelector" not in webhook  # every namespace is watched


def test_self_signed_certificate_is_trusted_by_both_webhooks_for_the_service_name(
    helm_path: Path,
) -> None:
    manifests = render(helm_path, {"watchNamespaces": ["team-a"]})
    secret = named(manifests, "Secret", mounted_secret(manifests)[0])
    ca = x509.load_pem_x509_certificate(decoded(secret, "ca.crt"))
    served = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
    served.verify_directly_issued_by(ca)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "patchbay-webhook.patchbay-system.svc" in names.get_values_for_type(x509.DNSName)
    for webhook in _webhooks(manifests):
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == decoded(secret, "ca.crt")
    # a new certificate restarts the operator, which reads it at start
    annotations = the(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["checksum/webhook-tls"]
        == hashlib.sha256(decoded(secret, "tls.crt")).hexdigest()
    )


def test_failure_policy_value_applies_to_validation_and_authorisation_not_labelling(
    helm_path: Path,
) -> None:
    for policy in ("Fail", "Ignore"):
        manifests = render(helm_path, {"webhook": {"failurePolicy": policy}})
        assert [w["failurePolicy"] for w in _webhooks(manifests)] == [policy, policy, "Ignore"]


def test_webhooks_judge_only_the_listed_namespaces(helm_path: Path) -> None:
    manifests = render(helm_path, {"watchNamespaces": ["team-a", "team-b"]})
    for webhook in _webhooks(manifests):
        assert webhook["namespaceSelector"] == {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": ["team-a", "team-b"],
                }
            ]
        }


def test_disabled_webhook_renders_no_webhook_objects_or_arguments(helm_path: Path) -> None:
    manifests = render(helm_path, WEBHOOK_OFF)
    for kind in (*WEBHOOK_KINDS, "Secret", "Certificate", "Issuer"):
        assert of_kind(manifests, kind) == [], kind
    assert [s["metadata"]["name"] for s in of_kind(manifests, "Service")] == ["patchbay-metrics"]
    container = operator_container(manifests)
    assert not any(a.startswith(("--webhook", "--admission-key")) for a in container["args"])
    assert [r["metadata"]["name"] for r in of_kind(manifests, "ClusterRole")] == ["patchbay"]
    assert of_kind(manifests, "Role") == []
    assert "readinessProbe" not in container
    assert [
        v["name"] for v in the(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    ] == ["tmp"]


def test_cert_manager_mode_issues_the_mounted_secret_and_injects_its_ca(helm_path: Path) -> None:
    manifests = render(helm_path, CERT_MANAGER)
    assert of_kind(manifests, "Secret") == []
    issuer = the(manifests, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    certificate = the(manifests, "Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "kind": "Issuer",
        "name": issuer["metadata"]["name"],
    }
    assert certificate["spec"]["secretName"] == mounted_secret(manifests)[0]
    assert "patchbay-webhook.patchbay-system.svc" in certificate["spec"]["dnsNames"]
    for kind in WEBHOOK_KINDS:
        configuration = the(manifests, kind)
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"patchbay-system/{certificate['metadata']['name']}"
        }
        assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    pod_metadata = the(manifests, "Deployment")["spec"]["template"]["metadata"]
    assert "annotations" not in pod_metadata


def test_upgrade_keeps_the_self_signed_certificate_stored_in_the_cluster(
    control_plane: localcluster.ControlPlane, helm_path: Path, namespace: str
) -> None:
    first = render(helm_path, namespace=namespace, cluster=control_plane)
    secret = the(first, "Secret")
    apply_manifests(control_plane, [secret])
    upgrade = render(helm_path, namespace=namespace, cluster=control_plane)
    assert the(upgrade, "Secret")["data"] == secret["data"]
    assert (
        _webhook(upgrade, "ValidatingWebhookConfiguration")["clientConfig"]["caBundle"]
        == (secret["data"]["ca.crt"])
    )
    pod_annotations = [
        the(m, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        for m in (first, upgrade)
    ]
    assert pod_annotations[0] == pod_annotations[1]
    # without a stored Secret (a first install) every render makes a new one
    assert the(render(helm_path, namespace=namespace), "Secret")["data"] != secret["data"]


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
    metrics_port: int
    webhook_port: int
    webhook_ca: bytes
    # the name the API server checks the webhook's certificate against
    webhook_host_name: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.release_namespace}:{self.service_account}"


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
    liveness_port, metrics_port, webhook_port = free_port(), free_port(), free_port()
    values: dict[str, Any] = {
        "liveness": {"port": liveness_port},
        "metrics": {"port": metrics_port},
        "webhook": {"port": webhook_port},
        "peering": {"enabled": True, "name": release},
        # the chart denies loopback by default; here every system under test is on it
        "egress": {"deny": []},
    }
    if not clusterwide:
        values["watchNamespaces"] = [watched]
    manifests = render(
        helm_path, values, release=release, namespace=release_namespace, include_crds=True
    )
    # the tests call the operator's webhook directly
    token = install_without_webhooks(control_plane, manifests, release_namespace)
    workdir = tmp_path_factory.mktemp(request.param)
    kubeconfig = token_kubeconfig(control_plane, token, workdir / "kubeconfig")
    service = _webhook(manifests, "ValidatingWebhookConfiguration")["clientConfig"]["service"]
    # The certificate Secret as the kubelet would mount it.
    secret_name, mount_path = mounted_secret(manifests)
    secret = named(manifests, "Secret", secret_name)
    certificates = workdir / "webhook-tls"
    certificates.mkdir()
    for key in secret["data"]:
        (certificates / key).write_bytes(decoded(secret, key))
    # The chart's own arguments; every endpoint on loopback only.
    args = [
        a.replace("http://0.0.0.0:", "http://127.0.0.1:").replace(mount_path, str(certificates))
        for a in operator_container(manifests)["args"]
    ] + ["--webhook-host=127.0.0.1"]
    operator = OperatorProcess(
        control_plane, workdir / "operator.log", *args, kubeconfig=kubeconfig
    )
    try:
        yield Installation(
            release_namespace=release_namespace,
            watched=watched,
            unwatched=unwatched,
            service_account=the(manifests, "ServiceAccount")["metadata"]["name"],
            clusterwide=clusterwide,
            manifests=manifests,
            operator=operator,
            liveness_port=liveness_port,
            metrics_port=metrics_port,
            webhook_port=webhook_port,
            webhook_ca=decoded(secret, "ca.crt"),
            webhook_host_name=f"{service['name']}.{service['namespace']}.svc",
        )
    finally:
        operator.stop()
        for kind in ("ClusterRoleBinding", "ClusterRole", "ClusterKopfPeering"):
            for m in of_kind(manifests, kind):
                control_plane.kubectl(
                    "delete", kind.lower(), m["metadata"]["name"], "--ignore-not-found", check=False
                )
        for ns in (release_namespace, watched, unwatched):
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _name() -> str:
    return f"conn-{uuid.uuid4().hex[:6]}"


def _connect(
    cp: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> tuple[str, str]:
    """A Connection to ``api`` in the watched namespace, its Secret holding ``token``;
    returns their names."""
    name, secret = _name(), _name()
    apply_http_connection(cp, installed.watched, name, api.base_url, token, secret)
    return name, secret


# kopf's own complaints, and the reconciler's (it logs an API error's status and reason).
# A bare "403" would also match log timestamps (",403" milliseconds); every 403 the
# operator or kopf logs says "Forbidden" as well.
PERMISSION_TROUBLE = re.compile(r"forbidden|not enough permissions|KubeApiError", re.IGNORECASE)


def test_operator_with_chart_identity_makes_connection_ready(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, _ = _connect(control_plane, installed, api, token)
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
    name, _ = _connect(control_plane, installed, api, "wrong-token-value")
    obj = wait_for_reason(control_plane, installed.watched, name, "AuthenticationFailed")
    assert obj["status"]["phase"] == "Failed"


def test_operator_with_chart_identity_reverifies_a_rotated_secret(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, secret = _connect(control_plane, installed, api, "stale-token-value")
    wait_for_reason(control_plane, installed.watched, name, "AuthenticationFailed")
    apply(control_plane, installed.watched, token_secret(secret, token))
    wait_for_reason(control_plane, installed.watched, name, "Verified")


def test_chart_metrics_port_reports_connection_readiness(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, _ = _connect(control_plane, installed, api, token)
    wait_for_reason(control_plane, installed.watched, name, "Verified")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{installed.metrics_port}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    ready = {
        sample.labels["name"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "patchbay_connection_ready"
        and sample.labels["namespace"] == installed.watched
        and sample.labels["connector"] == "http-api"
    }
    assert ready[name] == 1.0


class _LoopbackConnection(http.client.HTTPConnection):
    """HTTPS to a loopback port, checking the certificate for another host name: the
    Service name the API server would use."""

    def __init__(self, port: int, ca: bytes, host_name: str) -> None:
        super().__init__("127.0.0.1", port, timeout=10)
        self.tls = ssl.create_default_context(cadata=ca.decode())
        self.host_name = host_name

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host_name)


def _admission_review(
    installed: Installation,
    path: str,
    connection: Manifest,
    user: dict[str, Any] | None = None,
) -> dict[str, Any]:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "patchbay.dev", "version": "v1alpha1", "kind": "Connection"},
            "resource": {"group": "patchbay.dev", "version": "v1alpha1", "resource": "connections"},
            "namespace": installed.watched,
            "name": connection["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": user or {"username": "admin"},
            "object": {
                **connection,
                "metadata": {**connection["metadata"], "namespace": installed.watched},
            },
            "dryRun": False,
        },
    }
    conn = _LoopbackConnection(
        installed.webhook_port, installed.webhook_ca, installed.webhook_host_name
    )

    def post() -> dict[str, Any] | None:
        try:
            conn.request("POST", path, json.dumps(review), {"Content-Type": "application/json"})
        except ConnectionRefusedError:
            conn.close()
            return None  # still starting
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())["response"]
        return answer

    try:
        result: dict[str, Any] = wait_for(post, "the operator's webhook server")
        return result
    finally:
        conn.close()


def test_chart_webhook_certificate_and_paths_serve_admission_for_the_service_name(
    installed: Installation,
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    leaky = http_connection(_name(), "http://127.0.0.1:9")
    leaky["spec"]["config"]["token"] = canary
    refused = _admission_review(installed, "/validate-connection", leaky)
    assert refused["allowed"] is False
    assert "variable 'token'" in refused["status"]["message"]
    assert canary not in json.dumps(refused)

    labelled = _admission_review(
        installed, "/label-connection", http_connection(_name(), "http://127.0.0.1:9")
    )
    assert labelled["allowed"] is True
    patch = json.loads(base64.b64decode(labelled["patch"]))
    assert {
        "op": "add",
        "path": "/metadata/labels",
        "value": {
            "patchbay.dev/connector": "http-api",
            "patchbay.dev/driver": "http",
        },
    } in patch


def test_chart_identity_reviews_a_connections_secrets_for_its_author_and_records_it(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    secret = _name()
    control_plane.kubectl(
        "create", "secret", "generic", secret, "-n", installed.watched, "--from-literal=token=x"
    )
    connection = http_connection(_name(), "http://127.0.0.1:9", secret=secret)
    stranger = _admission_review(
        installed, "/authorize-connection", connection, {"username": "stranger", "groups": []}
    )
    assert stranger["allowed"] is False
    assert f"user 'stranger' may not get Secret '{secret}'" in stranger["status"]["message"]

    admin = {"username": "an-admin", "groups": ["system:masters", "system:authenticated"]}
    admitted = _admission_review(installed, "/authorize-connection", connection, admin)
    assert admitted["allowed"] is True
    patch = json.loads(base64.b64decode(admitted["patch"]))
    (record,) = [op for op in patch if "authorization" in json.dumps(op)]
    assert json.dumps(record["value"]).count("v1:") == 1
    # the key was created by the operator under the chart's identity, in its namespace
    (where,) = [
        a.removeprefix("--admission-key=")
        for a in operator_container(installed.manifests)["args"]
        if a.startswith("--admission-key=")
    ]
    key_namespace, key_name = where.split("/")
    assert key_namespace == installed.release_namespace
    key = get_json(control_plane, "secret", key_name, "-n", key_namespace)
    assert key["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "patchbay"


def test_deleting_connection_removes_its_binding_secret_without_secret_delete_rights(
    control_plane: localcluster.ControlPlane, installed: Installation, api: TokenApi, token: str
) -> None:
    name, secret = _connect(control_plane, installed, api, token)
    wait_for_reason(control_plane, installed.watched, name, "Verified")
    control_plane.kubectl("delete", "connection", name, "-n", installed.watched)
    wait_for_binding_deleted(control_plane, installed.watched, name)
    control_plane.kubectl("get", "secret", secret, "-n", installed.watched)


def _can_i(
    cp: localcluster.ControlPlane, installed: Installation, verb: str, resource: str, namespace: str
) -> bool:
    result = cp.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={installed.user}", check=False
    )
    return result.stdout.strip() == "yes"


def test_chart_identity_can_write_but_never_delete_or_patch_secrets(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    # bindings are created, then replaced whole; a Secret is never deleted or patched
    assert _can_i(control_plane, installed, "update", "secrets", installed.watched)
    for verb in ("delete", "deletecollection", "patch"):
        assert not _can_i(control_plane, installed, verb, "secrets", installed.watched), verb
    assert not _can_i(control_plane, installed, "*", "*", installed.watched)
    assert not _can_i(control_plane, installed, "delete", "connections", installed.watched)


def test_chart_identity_writes_to_no_peering_object_but_its_own(
    control_plane: localcluster.ControlPlane, installed: Installation
) -> None:
    kind = "ClusterKopfPeering" if installed.clusterwide else "KopfPeering"
    own = the(installed.manifests, kind)["metadata"]["name"]
    resource = f"{kind.lower()}s.kopf.dev"
    assert _can_i(control_plane, installed, "patch", f"{resource}/{own}", installed.watched)
    assert not _can_i(control_plane, installed, "patch", f"{resource}/other", installed.watched)
    for verb in ("create", "update", "delete"):
        assert not _can_i(control_plane, installed, verb, f"{resource}/{own}", installed.watched)
    assert _can_i(control_plane, installed, "watch", resource, installed.watched)


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
    # the operator's own, and the admission webhooks' ClusterRole and key Role
    assert len(roles) == (3 if installed.clusterwide else 4)
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
        assert control_plane.kubectl(*can_i, "update", "secrets").stdout.strip() == "yes"
        denied = control_plane.kubectl(*can_i, "delete", "secrets", check=False)
        assert denied.stdout.strip() == "no"
    finally:
        for m in manifests:
            if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                control_plane.kubectl(
                    "delete", m["kind"].lower(), m["metadata"]["name"], "--ignore-not-found"
                )
        control_plane.kubectl("delete", "namespace", "patchbay-system", "--wait=false")
