"""The API server calls the operator's admission webhooks over loopback: a
credential written inline in spec.config is refused before it is stored, and a
Connection may reference only Secrets its author may get (users impersonated with
`kubectl --as`)."""

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
from http_server import TokenApi
from operator_harness import (
    OperatorProcess,
    condition,
    connection_manifest,
    get_json,
    secret_manifest,
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


def test_own_checks_on_a_connector_that_does_not_allow_them_are_refused(
    control_plane: localcluster.ControlPlane, namespace: str, webhook: OperatorProcess
) -> None:
    probing = connection("probing", {"baseUrl": "http://127.0.0.1:9"})
    probing["spec"]["verification"] = {
        "checks": [{"type": "http", "http": {"method": "GET", "path": "/admin/export"}}]
    }
    refused = apply(control_plane, namespace, probing)
    assert refused.returncode != 0
    assert "spec.verification.checks: this connector does not allow" in refused.stderr
    assert not stored(control_plane, namespace, "probing")


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


RECORD = "patchbay.dev/authorization"
# may write Connections in the namespace; reads no Secret, except what a test grants
AUTHOR_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "connection-author"},
    "rules": [
        {
            "apiGroups": ["patchbay.dev"],
            "resources": ["connections"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ],
}


def grant(cp: localcluster.ControlPlane, namespace: str, user: str, *readable_secrets: str) -> None:
    """``user`` may write Connections in the namespace and get only ``readable_secrets``."""
    bindings: list[dict[str, Any]] = [AUTHOR_ROLE, binding(user, "connection-author")]
    if readable_secrets:
        bindings += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": f"{user}-secrets"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "resourceNames": list(readable_secrets),
                        "verbs": ["get"],
                    }
                ],
            },
            binding(user, f"{user}-secrets"),
        ]
    for obj in bindings:
        assert apply(cp, namespace, obj).returncode == 0


def binding(user: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def http_api(name: str, base_url: str, **spec: Any) -> dict[str, Any]:
    ref = {"kind": "ClusterConnector", "name": "http-api"}
    return connection_manifest(name, ref, {"baseUrl": base_url}, **spec)


def stored(cp: localcluster.ControlPlane, namespace: str, name: str) -> bool:
    found = cp.kubectl("get", "connection", name, "-n", namespace, check=False)
    return found.returncode == 0


@pytest.fixture
def payments_db(control_plane: localcluster.ControlPlane, namespace: str) -> str:
    """A Secret nobody but the admin may read, and which allows no Connection."""
    canary = f"canary-{uuid.uuid4().hex}"
    secret = secret_manifest("payments-db", allowed=None, password=canary)
    assert apply(control_plane, namespace, secret).returncode == 0
    return canary


@pytest.mark.parametrize(
    "reference",
    [
        {"credentials": {"secretRef": {"name": "payments-db"}}},
        {
            "credentials": {
                "items": [
                    {"key": "token", "secretKeyRef": {"name": "payments-db", "key": "password"}}
                ]
            }
        },
        {"tls": {"caSecretRef": {"name": "payments-db", "key": "password"}}},
    ],
    ids=["secretRef", "items", "tls"],
)
def test_an_author_who_may_not_get_a_secret_cannot_reference_it(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    webhook: OperatorProcess,
    api: TokenApi,
    payments_db: str,
    reference: dict[str, Any],
) -> None:
    grant(control_plane, namespace, "alice")
    refused = apply(
        control_plane, namespace, http_api("steal", api.base_url, **reference), "--as", "alice"
    )
    assert refused.returncode != 0
    assert "user 'alice' may not get Secret 'payments-db'" in refused.stderr
    assert "missing permission: get secrets" in refused.stderr
    assert not stored(control_plane, namespace, "steal")
    assert api.requests == []
    assert payments_db not in refused.stderr + webhook.logs()


def test_an_edit_cannot_point_an_admitted_connection_at_an_unreadable_secret(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    webhook: OperatorProcess,
    api: TokenApi,
    token: str,
    payments_db: str,
) -> None:
    assert (
        apply(
            control_plane, namespace, secret_manifest("alice-token", allowed=None, token=token)
        ).returncode
        == 0
    )
    grant(control_plane, namespace, "alice", "alice-token")
    mine = http_api("mine", api.base_url, credentials={"secretRef": {"name": "alice-token"}})
    admitted = apply(control_plane, namespace, mine, "--as", "alice")
    assert admitted.returncode == 0, admitted.stderr
    wait_for_reason(control_plane, namespace, "mine", "Verified")

    stolen = http_api("mine", api.base_url, credentials={"secretRef": {"name": "payments-db"}})
    refused = apply(control_plane, namespace, stolen, "--as", "alice")
    assert refused.returncode != 0
    assert "'payments-db'" in refused.stderr
    obj = get_json(control_plane, "connection", "mine", "-n", namespace)
    assert obj["spec"]["credentials"] == {"secretRef": {"name": "alice-token"}}
    assert payments_db not in api.requests[-1]


def test_an_author_who_may_get_the_secret_is_admitted_with_a_record_that_survives_edits(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    webhook: OperatorProcess,
    api: TokenApi,
    token: str,
) -> None:
    secret = secret_manifest("team-token", allowed=None, token=token)
    assert apply(control_plane, namespace, secret).returncode == 0
    grant(control_plane, namespace, "bob", "team-token")
    grant(control_plane, namespace, "alice")
    ours = http_api("ours", api.base_url, credentials={"secretRef": {"name": "team-token"}})
    admitted = apply(control_plane, namespace, ours, "--as", "bob")
    assert admitted.returncode == 0, admitted.stderr
    obj = wait_for_reason(control_plane, namespace, "ours", "Verified")
    record = obj["metadata"]["annotations"][RECORD]

    # someone who may not read the Secret can still annotate, and cannot forge the record
    control_plane.kubectl(
        "annotate",
        "connection",
        "ours",
        "-n",
        namespace,
        "--as",
        "alice",
        "--overwrite",
        "patchbay.dev/verify-requested-at=now",
        f"{RECORD}=v1:forged",
    )
    obj = get_json(control_plane, "connection", "ours", "-n", namespace)
    assert obj["metadata"]["annotations"][RECORD] == record
    # ... but cannot move the Connection somewhere else with bob's Secret
    moved = http_api(
        "ours", "http://127.0.0.1:9", credentials={"secretRef": {"name": "team-token"}}
    )
    refused = apply(control_plane, namespace, moved, "--as", "alice")
    assert refused.returncode != 0
    assert "'team-token'" in refused.stderr


def test_without_the_webhook_an_unauthorised_secret_never_reaches_the_server(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    api: TokenApi,
    token: str,
) -> None:
    secret = secret_manifest("team-token", allowed=None, token=token)
    assert apply(control_plane, namespace, secret).returncode == 0
    ref = {"credentials": {"secretRef": {"name": "team-token"}}}
    assert (
        apply(control_plane, namespace, http_api("unrecorded", api.base_url, **ref)).returncode == 0
    )
    copied = http_api("copied", api.base_url, **ref)
    copied["metadata"]["annotations"] = {RECORD: "v1:" + "0" * 64}
    assert apply(control_plane, namespace, copied).returncode == 0

    for name in ("unrecorded", "copied"):
        obj = wait_for_reason(control_plane, namespace, name, "SecretNotAuthorized")
        assert "'team-token'" in condition(obj, "Ready")["message"]
        assert "binding" not in obj["status"]
    assert api.requests == []

    # the Secret's owner allows one of them by name
    control_plane.kubectl(
        "annotate",
        "secret",
        "team-token",
        "-n",
        namespace,
        "patchbay.dev/allowed-connections=unrecorded",
    )
    wait_for_reason(control_plane, namespace, "unrecorded", "Verified")
    assert (
        get_json(control_plane, "connection", "copied", "-n", namespace)["status"]["phase"]
        == "Failed"
    )
    assert api.authenticated == [f"Bearer {token}"]
