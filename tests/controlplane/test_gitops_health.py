"""What GitOps tools make of patchbay's objects, with the tools' own code: Argo CD's health
checks of deploy/argocd (run by gopher-lua as Argo CD runs them) and kstatus (Flux,
kpt), on Connections and connectors the running operator has written status for."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

import localcluster
from gotools import argocd_health, kstatus
from http_server import TokenApi
from operator_harness import (
    OperatorProcess,
    condition,
    get_json,
    http_connection,
    token_secret,
    wait_for,
)
from tests.conftest import REPO_ROOT
from tests.controlplane.test_operator_http import Site as HttpSite
from tests.controlplane.test_operator_http import bearer_connector

# What users put into argocd-cm: the scripts are looked up by <group>_<kind>, as Argo CD does.
ARGOCD_CM = yaml.safe_load((REPO_ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())


def argocd_health_of(obj: dict[str, Any]) -> tuple[str, str]:
    group = obj["apiVersion"].split("/")[0]
    script = ARGOCD_CM["data"][f"resource.customizations.health.{group}_{obj['kind']}"]
    return argocd_health(script, obj)


class Site(HttpSite):
    """The operator watching a fresh namespace and an HTTP API on loopback that accepts
    ``token``; each Connection reads a Secret of its own, <name>-token."""

    def connect(
        self, name: str, *, token: str | None = None, base_url: str | None = None, **spec: Any
    ) -> None:
        url = self.api.base_url if base_url is None else base_url
        self.apply(
            token_secret(f"{name}-token", token or self.token),
            http_connection(name, url, f"{name}-token", **spec),
        )

    def checked(self, kind: str, name: str) -> dict[str, Any]:
        """A connector once the operator has written its Ready condition."""
        scope = ["-n", self.namespace] if kind == "connector" else []

        def probe() -> dict[str, Any] | None:
            obj = get_json(self.control_plane, kind, name, *scope)
            return obj if condition(obj, "Ready") else None

        result: dict[str, Any] = wait_for(probe, f"{kind} {name} to have a Ready condition")
        return result


@pytest.fixture
def site(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    api: TokenApi,
    token: str,
) -> Site:
    return Site(control_plane, namespace, operator, api, token)


def test_a_verified_connection_is_healthy_with_its_ready_reason(site: Site) -> None:
    site.connect("orders")
    connection = site.wait("orders", "Verified")

    status, message = argocd_health_of(connection)

    assert status == "Healthy"
    assert message == f"Verified: {condition(connection, 'Ready')['message']}"
    assert [status for status, _ in kstatus([connection])] == ["Current"]


def test_a_failed_connection_is_degraded_naming_its_reason(site: Site) -> None:
    site.connect("orders", token="not-the-token")
    connection = site.wait("orders", "AuthenticationFailed")
    assert connection["status"]["phase"] == "Failed"

    status, message = argocd_health_of(connection)

    assert status == "Degraded"
    assert message.startswith("AuthenticationFailed: ")
    assert site.token not in message


def test_a_suspended_connection_is_suspended(site: Site) -> None:
    site.connect("orders", suspend=True)
    connection = site.wait("orders", "Suspended")

    assert argocd_health_of(connection) == ("Suspended", "suspended (spec.suspend is true)")


def test_a_connection_waiting_for_its_rate_limit_is_progressing(site: Site) -> None:
    metered = bearer_connector(
        "metered", verification={"http": {"path": "/"}}, rateLimit={"requests": 1, "per": "1h"}
    )
    names = ["first", "second"]
    site.apply(
        token_secret("api-token", site.token),
        metered,
        *(http_connection(name, site.api.base_url, connector="metered") for name in names),
    )

    def waiting() -> dict[str, Any] | None:
        for name in names:
            connection = site.get("connection", name)
            if condition(connection, "Ready").get("reason") == "RateLimited":
                return connection
        return None

    connection = wait_for(waiting, "a Connection to wait for the rate limit")
    assert connection["status"]["phase"] == "Pending"

    status, message = argocd_health_of(connection)

    assert status == "Progressing"
    assert message.startswith("RateLimited: ")
    reconciling = condition(connection, "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "RateLimited")
    assert kstatus([connection]) == [("InProgress", reconciling["message"])]


def test_objects_the_operator_has_not_seen_yet_are_progressing(site: Site) -> None:
    site.connect("orders")
    site.wait("orders", "Verified")
    site.operator.stop()

    moved = {"spec": {"config": {"baseUrl": f"{site.api.base_url}/v2"}}}
    site.control_plane.kubectl(
        "patch", "connection", "orders", "-n", site.namespace, "--type=merge",
        "-p", json.dumps(moved),
    )  # fmt: skip
    site.connect("new")
    site.apply(bearer_connector("unchecked"))
    edited = site.get("connection", "orders")
    unseen = site.get("connection", "new")
    unchecked = site.get("connector", "unchecked")
    assert edited["metadata"]["generation"] > edited["status"]["observedGeneration"]

    assert argocd_health_of(edited) == (
        "Progressing",
        "generation 2 not verified yet (status describes 1)",
    )
    assert argocd_health_of(unseen) == ("Progressing", "waiting for the operator's first status")
    assert argocd_health_of(unchecked) == (
        "Progressing",
        "waiting for the operator to check the definition",
    )
    assert [status for status, _ in kstatus([edited, unseen, unchecked])] == ["InProgress"] * 3


def test_connectors_are_healthy_when_usable_and_degraded_when_not(site: Site) -> None:
    locked_without_default = bearer_connector(
        "broken", variables=[{"key": "baseUrl", "type": "url", "locked": True}]
    )
    site.apply(bearer_connector("usable"), locked_without_default)

    usable = site.checked("connector", "usable")
    broken = site.checked("connector", "broken")
    catalogue_entry = site.checked("clusterconnector", "http-api")

    assert argocd_health_of(usable) == ("Healthy", "Valid: the definition is usable")
    status, message = argocd_health_of(broken)
    assert status == "Degraded"
    assert message.startswith("ConnectorInvalid: ")
    assert "locked variable needs a default" in message
    assert argocd_health_of(catalogue_entry)[0] == "Healthy"
    statuses = kstatus([usable, broken, catalogue_entry])
    assert [status for status, _ in statuses] == ["Current", "Failed", "Current"]
    assert "locked variable needs a default" in statuses[1][1]


def test_kstatus_sees_failures_that_wait_for_a_change_as_failed_and_a_suspend_as_current(
    site: Site,
) -> None:
    site.connect("ready")
    site.connect("refused", token="not-the-token")
    site.apply(http_connection("unsecured", site.api.base_url, "no-such-secret"))
    misconfigured = http_connection("misconfigured", site.api.base_url, "ready-token")
    misconfigured["spec"]["config"]["colour"] = "red"  # no such variable; no webhook here
    site.apply(misconfigured)
    site.connect("paused", suspend=True)
    expected = {
        "ready": ("Verified", "Current"),
        "refused": ("AuthenticationFailed", "Failed"),
        "unsecured": ("SecretNotFound", "Failed"),
        "misconfigured": ("ConfigInvalid", "Failed"),
        "paused": ("Suspended", "Current"),
    }
    connections = [site.wait(name, reason) for name, (reason, _) in expected.items()]

    statuses = kstatus(connections)

    assert [status for status, _ in statuses] == [status for _, status in expected.values()]
    for (status, message), connection in zip(statuses, connections, strict=True):
        if status == "Failed":  # Flux reports the reason's message, not a timeout
            stalled = condition(connection, "Stalled")
            assert (stalled["status"], message) == ("True", stalled["message"])
            assert stalled["reason"] == connection["status"]["reason"]


def test_kubectl_wait_for_ready_and_for_a_failed_phase(site: Site) -> None:
    site.connect("ready")
    site.connect("refused", token="not-the-token")

    def wait(*args: str) -> int:
        return site.control_plane.kubectl(
            "wait", *args, "-n", site.namespace, "--timeout=60s", check=False
        ).returncode

    assert wait("--for=condition=Ready", "connection/ready") == 0
    assert wait("--for=jsonpath={.status.phase}=Failed", "connection/refused") == 0
    assert wait("--for=jsonpath={.status.reason}=AuthenticationFailed", "connection/refused") == 0
