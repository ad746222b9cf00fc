"""The operator, running for real, reconciles Connections on the http driver
against a local HTTP API: status, labels, binding Secret, events, secrets."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

import localcluster
from http_server import (
    CertificateAuthority,
    OAuth2Server,
    TokenApi,
    serve_in_thread,
    serve_mutual_tls,
    serve_token_api,
)
from operator_harness import (
    Manifest,
    OperatorProcess,
    apply,
    apply_http_connection,
    condition,
    connection_manifest,
    events_for,
    get_json,
    http_connection,
    secret_manifest,
    token_secret,
    wait_for,
    wait_for_binding_deleted,
    wait_for_reason,
    wait_for_single_failed_login,
)
from tests.conftest import REPO_ROOT


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return ("--egress-deny", "127.0.0.2/32")


@dataclass(frozen=True)
class Site:
    """The operator watching a fresh namespace, an HTTP API on loopback that accepts
    ``token``, and what the tests do there."""

    control_plane: localcluster.ControlPlane
    namespace: str
    operator: OperatorProcess
    api: TokenApi
    token: str

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl in the namespace."""
        return self.control_plane.kubectl(*args, "-n", self.namespace)

    def apply(self, *objects: Manifest) -> None:
        apply(self.control_plane, self.namespace, *objects)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return get_json(self.control_plane, kind, name, "-n", self.namespace)

    def events(self, name: str) -> list[dict[str, Any]]:
        return events_for(self.control_plane, self.namespace, name)

    def connect(
        self, name: str, *, token: str | None = None, base_url: str | None = None, **spec: Any
    ) -> None:
        """An http Connection ``name`` to the API (or ``base_url``) and the Secret api-token
        holding the token (or ``token``)."""
        url = self.api.base_url if base_url is None else base_url
        apply_http_connection(
            self.control_plane, self.namespace, name, url, token or self.token, **spec
        )

    def wait(self, name: str, reason: str) -> dict[str, Any]:
        """The Connection ``name`` once its Ready condition carries ``reason``."""
        return wait_for_reason(self.control_plane, self.namespace, name, reason)

    def verified(self, name: str, **spec: Any) -> dict[str, Any]:
        """The Connection ``name`` (``connect``), once verified."""
        self.connect(name, **spec)
        return self.wait(name, "Verified")

    def request_verification(self, name: str, at: str) -> None:
        self.kubectl(
            "annotate", "connection", name, "--overwrite", f"patchbay.dev/verify-requested-at={at}"
        )


@pytest.fixture
def site(
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    api: TokenApi,
    token: str,
) -> Site:
    return Site(control_plane, namespace, operator, api, token)


def inventory_connector() -> Manifest:
    """The example Connector inventory-api, which locks its apiVersion variable."""
    example = REPO_ROOT / "deploy/examples/connector-inventory-api.yaml"
    connector: Manifest = yaml.safe_load(example.read_text())
    return connector


def bearer_connector(name: str, **spec: Any) -> dict[str, Any]:
    """A namespaced http Connector with bearer auth, like the http-api ClusterConnector."""
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": name},
        "spec": {
            "driver": "http",
            "auth": {"type": "bearer"},
            "variables": [
                {"key": "baseUrl", "type": "url", "required": True},
                {"key": "token", "required": True, "secret": True},
            ],
            **spec,
        },
    }


def test_good_token_makes_connection_ready_with_labels_binding_and_event(site: Site) -> None:
    obj = site.verified("billing")
    assert obj["status"]["phase"] == "Ready"
    assert obj["metadata"]["labels"] == {
        "patchbay.dev/connector": "http-api",
        "patchbay.dev/driver": "http",
    }
    verification = obj["status"]["verification"]
    assert verification["result"] == "Succeeded"
    assert verification["details"]["serverVersion"] == "token-api/1.0"
    assert obj["status"]["secretFields"] == {"token": {"configured": True}}
    assert obj["status"]["hasCredentials"] is True
    assert {c["type"] for c in obj["status"]["conditions"]} == {
        "ConnectorResolved",
        "CredentialsResolved",
        "Verified",
        "Ready",
    }
    assert all(
        c["observedGeneration"] == obj["metadata"]["generation"]
        for c in obj["status"]["conditions"]
    )

    binding = site.get("secret", "billing-binding")
    assert binding["type"] == "servicebinding.io/http"
    data = {k: base64.b64decode(v).decode() for k, v in binding["data"].items()}
    assert data["uri"] == site.api.base_url and data["token"] == site.token
    assert data["type"] == "http"
    assert binding["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    listed = site.kubectl(
        "get", "connections", "-l", "patchbay.dev/driver=http", "-o", "name"
    ).stdout.split()
    assert listed == ["connection.patchbay.dev/billing"]
    assert [e["reason"] for e in site.events("billing")] == ["Verified"]


def test_wrong_token_fails_authentication_with_one_attempt_per_period(site: Site) -> None:
    site.connect("billing", token="wrong-token-value")

    obj = wait_for_single_failed_login(
        site.control_plane, site.namespace, "billing", lambda: len(site.api.authenticated)
    )
    assert obj["status"]["verification"]["error"]["retryable"] is False
    events = site.events("billing")
    assert [e["reason"] for e in events] == ["VerificationFailed"]
    assert events[0]["type"] == "Warning"


def test_an_api_open_without_the_token_is_ready_with_a_credentials_warning(site: Site) -> None:
    async def open_root(request: web.Request) -> web.StreamResponse:
        return web.json_response({"service": "status page"})

    with serve_in_thread({"/": open_root}) as (url, seen):
        site.connect("open", base_url=url)
        obj = site.wait("open", "CredentialsNotRequired")

    assert obj["status"]["phase"] == "Ready"
    assert condition(obj, "Ready")["status"] == "True"
    assert "without credentials" in condition(obj, "Ready")["message"]
    assert [r.headers.get("Authorization") for r in seen.requests] == [
        None,
        f"Bearer {site.token}",
    ]
    events = site.events("open")
    assert [(e["reason"], e["type"]) for e in events] == [("CredentialsNotRequired", "Warning")]


def test_a_connection_names_the_request_that_proves_its_token(site: Site) -> None:
    async def whoami(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Api-Key") != site.token:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.Response(status=204)

    request = {
        "method": "POST",
        "path": "/v2/whoami",
        "expectStatus": [204],
        "credential": {"in": "header", "name": "X-Api-Key"},
    }
    with serve_in_thread({"/v2/whoami": whoami}) as (url, seen):
        site.connect("own", base_url=url, verification={"http": request})
        obj = site.wait("own", "Verified")

    assert [(r.method, r.path) for r in seen.requests] == [("POST", "/v2/whoami")] * 2
    assert "Authorization" not in seen.requests[1].headers
    assert obj["status"]["verification"]["result"] == "Succeeded"


def test_missing_secret_reports_secret_not_found_then_creating_it_verifies(site: Site) -> None:
    site.apply(http_connection("billing", site.api.base_url))
    obj = site.wait("billing", "SecretNotFound")
    generation = obj["metadata"]["generation"]
    assert "api-token" in condition(obj, "Ready")["message"]
    assert site.api.requests == []

    site.apply(token_secret("api-token", site.token))
    obj = site.wait("billing", "Verified")
    assert obj["metadata"]["generation"] == generation


def test_rotated_secret_reverifies_without_editing_connection(site: Site) -> None:
    site.connect("billing", token="stale-token-value")
    site.wait("billing", "AuthenticationFailed")

    site.apply(token_secret("api-token", site.token))
    site.wait("billing", "Verified")
    binding = site.get("secret", "billing-binding")
    assert base64.b64decode(binding["data"]["token"]).decode() == site.token


SUSPEND = '{"spec": {"suspend": true}}'
RESUME = '{"spec": {"suspend": false}}'


def test_suspended_connection_makes_no_calls_and_resumes(site: Site) -> None:
    site.connect("billing", suspend=True)
    obj = site.wait("billing", "Suspended")
    assert obj["status"]["phase"] == "Suspended"
    time.sleep(3)
    assert site.api.requests == []

    site.kubectl("patch", "connection", "billing", "--type", "merge", "-p", RESUME)
    site.wait("billing", "Verified")
    assert len(site.api.authenticated) == 1


def test_suspending_takes_the_credentials_out_of_the_binding_until_verified_again(
    site: Site,
) -> None:
    def binding() -> dict[str, str]:
        data = site.get("secret", "billing-binding")["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    site.verified("billing")
    assert binding()["token"] == site.token
    site.kubectl("patch", "connection", "billing", "--type", "merge", "-p", SUSPEND)
    suspended = site.wait("billing", "Suspended")
    withheld = binding()
    site.kubectl("patch", "connection", "billing", "--type", "merge", "-p", RESUME)
    resumed = site.wait("billing", "Verified")

    assert withheld == {"type": "http", "provider": "patchbay", "suspended": "true"}
    assert suspended["status"]["binding"] == {
        "name": "billing-binding",
        "credentialsWithheld": True,
    }
    assert binding()["token"] == site.token
    assert resumed["status"]["binding"] == {"name": "billing-binding"}
    # Events of one second have no order between them
    assert sorted(e["reason"] for e in site.events("billing")) == [
        "Suspended",
        "Verified",
        "Verified",
    ]


def test_kubectl_describe_shows_the_conditions_and_each_transitions_event(site: Site) -> None:
    def described() -> str:
        return site.kubectl("describe", "connection", "billing").stdout

    def condition_types(text: str) -> list[str]:
        section = text[text.index("  Conditions:") : text.index("  Has Credentials:")]
        return [line.split()[1] for line in section.splitlines() if line.split()[:1] == ["Type:"]]

    site.connect("billing", token="wrong-token-value")
    site.wait("billing", "AuthenticationFailed")
    site.apply(token_secret("api-token", site.token))
    site.wait("billing", "Verified")
    verified = described()
    site.kubectl("patch", "connection", "billing", "--type", "merge", "-p", SUSPEND)
    site.wait("billing", "Suspended")

    def with_three_events() -> str | None:
        text = described()
        return text if text.count("Normal") + text.count("Warning") >= 3 else None

    text = wait_for(with_three_events, "three Events in kubectl describe")

    assert condition_types(verified) == [
        "ConnectorResolved",
        "CredentialsResolved",
        "Verified",
        "Ready",
    ]
    assert condition_types(text) == ["ConnectorResolved", "CredentialsResolved", "Verified"]
    assert ["Phase:", "Suspended"] in [line.split() for line in text.splitlines()]
    events = text[text.index("Events:") :]
    rows = [line.split() for line in events.splitlines()[3:] if line.strip()]
    # Type, Reason, Age, From, Message
    assert sorted((row[0], row[1]) for row in rows) == [
        ("Normal", "Suspended"),
        ("Normal", "Verified"),
        ("Warning", "VerificationFailed"),
    ]
    assert "AuthenticationFailed: " in events and "spec.suspend is true" in events
    assert "wrong-token-value" not in verified + text and site.token not in verified + text


def test_deleting_connection_removes_its_binding_secret_only(site: Site) -> None:
    site.verified("billing")
    site.kubectl("delete", "connection", "billing")

    wait_for_binding_deleted(site.control_plane, site.namespace, "billing")
    site.kubectl("get", "secret", "api-token")


def test_secret_of_the_binding_name_that_is_not_ours_is_left_untouched(site: Site) -> None:
    foreign = token_secret("billing-binding", "somebody-elses-value")
    site.apply(foreign)
    before = site.get("secret", "billing-binding")
    site.connect("billing")

    obj = site.wait("billing", "BindingConflict")
    assert obj["status"]["phase"] == "Failed"
    assert "billing-binding" in condition(obj, "Ready")["message"]
    assert condition(obj, "Verified")["reason"] == "Verified"
    assert "binding" not in obj["status"]
    after = site.get("secret", "billing-binding")
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]


def test_host_in_denied_range_is_egress_denied_before_any_request(site: Site) -> None:
    with serve_token_api(site.token, host="127.0.0.2") as denied_api:
        site.connect("internal", base_url=denied_api.base_url)
        obj = site.wait("internal", "EgressDenied")
        assert "127.0.0.2" in condition(obj, "Ready")["message"]
        assert denied_api.requests == []


def test_verify_requested_annotation_triggers_a_new_verification(site: Site) -> None:
    site.verified("billing")
    assert len(site.api.authenticated) == 1
    site.request_verification("billing", "2026-11-23T10:00:00Z")
    wait_for(lambda: len(site.api.authenticated) == 2, "a second verification request")
    obj = wait_for(
        lambda: (
            (o := site.get("connection", "billing"))["status"]["verification"].get("requestedAt")
            == "2026-11-23T10:00:00Z"
            and o
        ),
        "the status to answer the request",
    )
    assert condition(obj, "Ready")["reason"] == "Verified"


@pytest.mark.parametrize(
    ("config", "variable"),
    [
        ({"baseUrl": "http://127.0.0.1:1", "region": "eu"}, "region"),
        ({}, "baseUrl"),
        ({"baseUrl": 42}, "baseUrl"),
        ({"baseUrl": "not a url"}, "baseUrl"),
        ({"baseUrl": "http://127.0.0.1:1", "token": "inline-canary-value"}, "token"),
    ],
    ids=["unknown", "missing-required", "wrong-type", "bad-url", "inline-secret"],
)
def test_invalid_config_reports_config_invalid_naming_the_variable(
    site: Site, config: dict[str, Any], variable: str
) -> None:
    connection = http_connection("bad-config", "unused")
    connection["spec"]["config"] = config
    site.apply(token_secret("api-token", site.token), connection)
    obj = site.wait("bad-config", "ConfigInvalid")
    message = condition(obj, "Ready")["message"]
    assert variable in message
    assert "inline-canary-value" not in json.dumps(obj["status"])
    assert "inline-canary-value" not in site.operator.logs()


def test_locked_variable_cannot_be_overridden(site: Site) -> None:
    connection = connection_manifest(
        "inventory",
        {"kind": "Connector", "name": "inventory-api"},
        {"baseUrl": site.api.base_url, "apiVersion": "v2"},
    )
    site.apply(inventory_connector(), connection)
    obj = site.wait("inventory", "ConfigInvalid")
    assert "apiVersion" in condition(obj, "Ready")["message"]
    assert "locked" in condition(obj, "Ready")["message"]


def test_missing_connector_reports_connector_not_found(site: Site) -> None:
    site.apply(http_connection("orphan", "http://127.0.0.1:1", connector="nowhere"))
    obj = site.wait("orphan", "ConnectorNotFound")
    assert "nowhere" in condition(obj, "Ready")["message"]


def test_second_default_for_a_connector_gets_default_conflict(site: Site) -> None:
    site.verified("first", default=True)
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    site.apply(http_connection("second", site.api.base_url, default=True))
    second = site.wait("second", "DefaultConflict")
    assert "first" in condition(second, "Ready")["message"]
    assert second["status"]["isDefault"] is False
    assert site.get("connection", "first")["status"]["isDefault"] is True

    site.kubectl("delete", "connection", "first")
    site.wait("second", "Verified")


def test_canary_token_never_reaches_logs_events_status_or_annotations(site: Site) -> None:
    site.verified("good")
    site.kubectl("delete", "secret", "api-token")
    site.wait("good", "SecretNotFound")

    connections = site.kubectl("get", "connections", "-o", "json").stdout
    events = site.kubectl("get", "events", "-o", "json").stdout
    assert site.token not in connections
    assert site.token not in events
    assert site.token not in site.operator.logs()


def test_connector_status_counts_its_connections_and_is_ready(site: Site) -> None:
    connections = [
        http_connection(f"inventory-{i}", site.api.base_url, secret=None, connector="inventory-api")
        for i in range(3)
    ]
    site.apply(inventory_connector(), *connections)

    def counted(expected: int) -> dict[str, Any] | None:
        obj = site.get("connector", "inventory-api")
        return obj if obj.get("status", {}).get("connections") == expected else None

    obj = wait_for(lambda: counted(3), "the connector to count 3 connections")
    assert condition(obj, "Ready")["status"] == "True"
    site.kubectl("delete", "connection", "inventory-0")
    wait_for(lambda: counted(2), "the connector to count 2 connections")


def test_manual_mode_verifies_once_then_only_on_request(site: Site) -> None:
    site.verified("manual", verification={"mode": "Manual"})
    site.apply(token_secret("api-token", "rotated-token-value"))
    time.sleep(3)
    assert len(site.api.authenticated) == 1
    site.request_verification("manual", "2026-11-23T11:00:00Z")
    site.wait("manual", "AuthenticationFailed")
    assert len(site.api.authenticated) == 2


def test_success_older_than_twice_the_interval_shows_stale(site: Site) -> None:
    connector = bearer_connector("quick", verification={"interval": "1m", "http": {"path": "/"}})
    connection = http_connection(
        "onchange", site.api.base_url, verification={"mode": "OnChange"}, connector="quick"
    )
    site.apply(connector, token_secret("api-token", site.token), connection)
    site.wait("onchange", "Verified")
    # Time passes: the last success is now three minutes old, more than twice the interval.
    three_minutes_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 180))
    site.kubectl(
        "patch",
        "connection",
        "onchange",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"verification": {"lastSuccessTime": three_minutes_ago}}}),
    )
    obj = site.wait("onchange", "Stale")
    assert condition(obj, "Ready")["status"] == "Unknown"
    assert obj["status"]["phase"] == "Pending"
    assert len(site.api.authenticated) == 1


def test_interval_stored_below_the_floor_is_held_to_it_and_said_so(site: Site) -> None:
    # The schema refuses such an interval now; an object stored before that rule keeps
    # it, which a test can only recreate by lifting the rules from the installed CRD.
    with rules_lifted(site.control_plane, "connectors.patchbay.dev", "verification"):
        connector = bearer_connector(
            "stormy", verification={"interval": "1ms", "http": {"path": "/"}}
        )
        # the API server takes a moment to serve the changed schema
        wait_for(
            lambda: (
                site.control_plane.kubectl(
                    "apply",
                    "-n",
                    site.namespace,
                    "-f",
                    "-",
                    input=yaml.safe_dump(connector),
                    check=False,
                ).returncode
                == 0
            ),
            "the connector admitted without the rule",
        )
    obj = site.verified("stormy", connector="stormy")
    assert "interval 1ms raised to the minimum 1m" in condition(obj, "Verified")["message"]
    time.sleep(5)
    assert len(site.api.authenticated) == 1


def test_very_long_result_message_is_cut_to_fit_the_status(site: Site) -> None:
    long_path = "/" + "x" * 7000

    async def redirect_far(request: web.Request) -> web.StreamResponse:
        if request.path == "/":
            raise web.HTTPFound(long_path)
        return web.json_response({"error": "gone"}, status=404)

    with serve_in_thread({"/{tail:.*}": redirect_far}) as (url, _):
        site.connect("far", base_url=url)
        obj = wait_for(
            lambda: (
                (o := site.get("connection", "far"))
                .get("status", {})
                .get("verification", {})
                .get("error")
                and o
            ),
            "a verification result",
        )
    error = obj["status"]["verification"]["error"]
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == error["code"] == "ResourceNotFound"
    assert len(error["message"]) <= 4096
    assert error["message"].endswith("…")


@contextmanager
def rules_lifted(control_plane: localcluster.ControlPlane, crd: str, field: str) -> Iterator[None]:
    """The CRD without the validation rules of ``spec.<field>``, restored afterwards."""
    path = f"/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/{field}"
    original = get_json(control_plane, "crd", crd)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]["properties"]["spec"]["properties"][field]

    def without_rules(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}
        if isinstance(node, list):
            return [without_rules(v) for v in node]
        return node

    def replace(value: Any) -> None:
        patch = [{"op": "replace", "path": path, "value": value}]
        control_plane.kubectl("patch", "crd", crd, "--type=json", "-p", json.dumps(patch))

    replace(without_rules(original))
    try:
        yield
    finally:
        replace(original)


def test_log_at_info_shows_the_verification_and_not_handler_bookkeeping(site: Site) -> None:
    site.verified("logged")
    namespace, operator = site.namespace, site.operator
    messages = [
        json.loads(line).get("message", "")
        for line in wait_for(
            lambda: [
                line for line in operator.logs().splitlines() if f"{namespace}/logged" in line
            ],
            "a log line about the Connection",
        )
    ]
    assert any(m.startswith(f"verified {namespace}/logged: Succeeded") for m in messages)
    assert any(m.startswith(f"{namespace}/logged is now Ready: Verified") for m in messages)
    assert "Handler 'connection_event' succeeded" not in operator.logs()


def test_connector_rate_limit_caps_calls_to_the_system(site: Site) -> None:
    connector = bearer_connector(
        "throttled",
        verification={"http": {"path": "/"}},
        rateLimit={"requests": 1, "per": "1h"},
    )
    connections = [
        http_connection(f"limited-{i}", site.api.base_url, connector="throttled") for i in range(3)
    ]
    site.apply(connector, token_secret("api-token", site.token), *connections)
    wait_for(lambda: len(site.api.authenticated) == 1, "the first verification")
    time.sleep(5)
    assert len(site.api.authenticated) == 1
    limited = [site.get("connection", f"limited-{i}") for i in range(3)]
    phases = [obj.get("status", {}).get("phase") for obj in limited]
    assert phases.count("Ready") == 1
    assert phases.count("Pending") == 2
    assert sorted(condition(obj, "Ready")["reason"] for obj in limited) == [
        "RateLimited",
        "RateLimited",
        "Verified",
    ]


def test_connector_change_reverifies_its_connections_within_its_rate_limit(site: Site) -> None:
    def connector(path: str) -> dict[str, Any]:
        return bearer_connector(
            "shared", verification={"http": {"path": path}}, rateLimit={"requests": 4, "per": "1h"}
        )

    def wait_for_both(reason: str) -> None:
        for i in range(2):
            site.wait(f"user-{i}", reason)

    api = site.api
    connections = [http_connection(f"user-{i}", api.base_url, connector="shared") for i in range(2)]
    site.apply(connector("/v1"), token_secret("api-token", site.token), *connections)
    wait_for_both("Verified")
    assert api.paths == ["/v1", "/v1"]

    site.apply(connector("/v2"))
    wait_for(lambda: api.paths[2:] == ["/v2", "/v2"], "both connections to use the new request")
    wait_for_both("Verified")

    # The budget of 4 calls per hour is spent: a further change must wait for it.
    site.apply(connector("/v3"))
    wait_for_both("RateLimited")
    time.sleep(3)
    assert len(api.paths) == 4


def test_metrics_follow_verifications_readiness_and_rate_limits(site: Site) -> None:
    operator = site.operator
    ready = (
        "patchbay_connection_ready",
        frozenset({("namespace", site.namespace), ("name", "watched"), ("connector", "http-api")}),
    )

    def counted(result: str, reason: str) -> float:
        key = ("patchbay_verifications_total", frozenset({("result", result), ("reason", reason)}))
        return operator.metrics().get(key, 0.0)

    verified_before = counted("Succeeded", "Verified")
    site.verified("watched")
    samples = operator.metrics()
    assert samples[ready] == 1.0
    assert counted("Succeeded", "Verified") == verified_before + 1
    http_count = ("patchbay_verification_duration_seconds_count", frozenset({("driver", "http")}))
    assert samples[http_count] >= 1

    failed_before = counted("Failed", "AuthenticationFailed")
    site.apply(token_secret("api-token", "rotated-to-a-wrong-value"))
    site.wait("watched", "AuthenticationFailed")
    assert operator.metrics()[ready] == 0.0
    assert counted("Failed", "AuthenticationFailed") == failed_before + 1

    site.kubectl("delete", "connection", "watched")
    wait_for(lambda: ready not in operator.metrics(), "the deleted Connection's series to go")

    connector = bearer_connector(
        "metered", verification={"http": {"path": "/"}}, rateLimit={"requests": 1, "per": "1h"}
    )
    waiting = [
        http_connection(f"metered-{i}", site.api.base_url, connector="metered") for i in range(2)
    ]
    site.apply(token_secret("api-token", site.token), connector, *waiting)
    wait_for(
        lambda: operator.metrics().get(("patchbay_rate_limited_total", frozenset()), 0) >= 1,
        "a verification to wait for the rate limit",
    )


def client_credentials_connector(provider: OAuth2Server) -> tuple[Manifest, Manifest]:
    """The Connector billing-oauth2 (client credentials, scope invoices.read) and the
    Secret billing-oauth2 with the provider's client id and secret."""
    connector = {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "billing-oauth2"},
        "spec": {
            "driver": "http",
            "auth": {
                "type": "oauth2ClientCredentials",
                "oauth2": {"tokenUrl": "{baseUrl}/oauth/token", "scopes": ["invoices.read"]},
            },
            "variables": [
                {"key": "baseUrl", "type": "url", "required": True},
                {"key": "clientId", "required": True, "secret": True},
                {"key": "clientSecret", "required": True, "secret": True},
            ],
            "verification": {"http": {"path": "/v1/me"}},
        },
    }
    credentials = secret_manifest(
        "billing-oauth2", clientId=provider.client_id, clientSecret=provider.client_secret
    )
    return connector, credentials


def test_oauth2_connection_becomes_ready_with_client_credentials_from_a_secret(
    site: Site,
) -> None:
    provider = OAuth2Server(
        client_id="billing-sync",
        client_secret=f"canary-{uuid.uuid4().hex}",
        allowed_scopes=frozenset({"invoices.read"}),
    )
    connector, credentials = client_credentials_connector(provider)
    with serve_in_thread(provider.routes()) as (url, _):
        connection = http_connection(
            "billing", url, secret="billing-oauth2", connector="billing-oauth2"
        )
        site.apply(connector, credentials, connection)
        obj = site.wait("billing", "Verified")

    assert obj["status"]["phase"] == "Ready"
    assert obj["status"]["verification"]["details"]["serverVersion"] == "oauth2-api/1.0"
    assert obj["status"]["secretFields"] == {
        "clientId": {"configured": True},
        "clientSecret": {"configured": True},
    }
    assert provider.api_auth_headers == [f"Bearer {provider.issued[0]}"]
    status = json.dumps(obj)
    events = json.dumps(site.events("billing"))
    for value in (provider.issued[0], provider.client_secret):
        assert value not in status
        assert value not in events
        assert value not in site.operator.logs()


def test_single_use_refresh_tokens_keep_working_across_verifications_and_a_restart(
    site: Site, tmp_path: Path
) -> None:
    provider = OAuth2Server(
        client_id="crm-sync",
        client_secret=f"canary-{uuid.uuid4().hex}",
        refresh_token=f"canary-rt-{uuid.uuid4().hex}",
        rotate_refresh_token=True,
    )
    first = provider.refresh_token
    connector = {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "crm-oauth2"},
        "spec": {
            "driver": "http",
            "auth": {
                "type": "oauth2RefreshToken",
                "oauth2": {"tokenUrl": "{baseUrl}/oauth/token"},
            },
            "variables": [
                {"key": "baseUrl", "type": "url", "required": True},
                {"key": "clientId", "required": True, "secret": True},
                {"key": "clientSecret", "required": True, "secret": True},
                {"key": "refreshToken", "required": True, "secret": True},
            ],
            "verification": {"http": {"path": "/v1/me"}},
        },
    }
    credentials = secret_manifest(
        "crm-oauth2",
        clientId=provider.client_id,
        clientSecret=provider.client_secret,
        refreshToken=first,
    )

    def answered(at: str) -> dict[str, Any] | None:
        obj = site.get("connection", "crm")
        verification = obj.get("status", {}).get("verification", {})
        return obj if verification.get("requestedAt") == at else None

    with serve_in_thread(provider.routes()) as (url, _):
        site.apply(
            connector,
            credentials,
            http_connection("crm", url, secret="crm-oauth2", connector="crm-oauth2"),
        )
        site.wait("crm", "Verified")
        site.request_verification("crm", "second")
        assert (
            condition(wait_for(lambda: answered("second"), "a second"), "Ready")["reason"]
            == "Verified"
        )
        site.operator.stop()
        restarted = OperatorProcess(
            site.control_plane, tmp_path / "restarted.log", "-n", site.namespace
        )
        try:
            site.request_verification("crm", "third")
            obj = wait_for(lambda: answered("third"), "a third, after the restart")
        finally:
            restarted.stop()

    assert condition(obj, "Ready")["reason"] == "Verified"
    presented = [form["refresh_token"] for form in provider.token_forms]
    assert len(presented) == 3 and len(set(presented)) == 3 and presented[0] == first
    users = site.get("secret", "crm-oauth2")
    assert base64.b64decode(users["data"]["refreshToken"]).decode() == first
    for kept in ("crm-token-state", "crm-binding"):
        data = site.get("secret", kept)["data"]
        assert base64.b64decode(data["refreshToken"]).decode() == provider.refresh_token
    shown = json.dumps(obj) + json.dumps(site.events("crm"))
    logs = site.operator.logs() + restarted.logs()
    for value in (*presented, provider.refresh_token, provider.client_secret):
        assert value not in shown
        assert value not in logs


def test_the_binding_carries_the_access_token_until_it_expires_unrenewed(site: Site) -> None:
    provider = OAuth2Server(
        client_id="billing-sync",
        client_secret=f"canary-{uuid.uuid4().hex}",
        allowed_scopes=frozenset({"invoices.read"}),
        token_lifetime=3,
    )
    connector, credentials = client_credentials_connector(provider)

    def binding() -> dict[str, str]:
        data = site.get("secret", "billing-binding")["data"]
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def answered(at: str) -> dict[str, Any] | None:
        obj = site.get("connection", "billing")
        verification = obj.get("status", {}).get("verification", {})
        return obj if verification.get("requestedAt") == at else None

    with serve_in_thread(provider.routes()) as (url, _):
        connection = http_connection(
            "billing",
            url,
            secret="billing-oauth2",
            connector="billing-oauth2",
            binding={"accessToken": True},
        )
        site.apply(connector, credentials, connection)
        verified = site.wait("billing", "Verified")
        bound = binding()
        # the token endpoint goes down and the token expires: the binding stops offering it
        provider.unavailable = True
        expires = datetime.strptime(bound["accessTokenExpiresAt"], "%Y-%m-%dT%H:%M:%SZ")
        time.sleep(max(0.0, (expires.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()))
        site.request_verification("billing", "after-expiry")
        failed = wait_for(lambda: answered("after-expiry"), "a verification after expiry")
        left = binding()

    assert bound["accessToken"] == provider.issued[0]
    verification = verified["status"]["verification"]
    attempted = datetime.fromisoformat(verification["lastAttemptTime"])
    # a 3-second token is renewed no sooner than the shortest interval allows
    assert datetime.fromisoformat(verification["nextTime"]) - attempted >= timedelta(minutes=1)
    assert condition(failed, "Ready")["reason"] == "ProviderError"
    assert "accessToken" not in left and "accessTokenExpiresAt" not in left
    assert left["clientId"] == provider.client_id
    shown = json.dumps(verified) + json.dumps(failed) + json.dumps(site.events("billing"))
    for value in (provider.issued[0], provider.client_secret):
        assert value not in shown
        assert value not in site.operator.logs()


def test_tls_client_cert_connection_becomes_ready_with_certificates_from_secrets(
    site: Site,
) -> None:
    server_ca, client_ca = CertificateAuthority("server-ca"), CertificateAuthority("client-ca")
    client = client_ca.issue_client("billing-client")
    connector = {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "billing-mtls"},
        "spec": {
            "driver": "http",
            "auth": {"type": "tlsClientCert"},
            "variables": [{"key": "baseUrl", "type": "url", "required": True}],
        },
    }
    secrets = [
        secret_manifest("billing-ca", **{"ca.crt": server_ca.cert_pem}),
        {
            **secret_manifest(
                "billing-client-cert", **{"tls.crt": client.cert_pem, "tls.key": client.key_pem}
            ),
            "type": "kubernetes.io/tls",
        },
    ]
    with serve_mutual_tls(server_ca, client_ca) as server:
        connection = http_connection(
            "billing",
            server.base_url,
            secret=None,
            connector="billing-mtls",
            tls={
                "caSecretRef": {"name": "billing-ca"},
                "clientCertSecretRef": {"name": "billing-client-cert"},
            },
        )
        site.apply(connector, *secrets, connection)
        obj = site.wait("billing", "Verified")

    assert obj["status"]["phase"] == "Ready"
    assert server.clients == ["billing-client"]
    key_body = client.key_pem.splitlines()[1]
    assert key_body not in json.dumps(obj)
    assert key_body not in site.operator.logs()


def test_a_connector_restricted_to_its_hosts_sends_nothing_anywhere_else(site: Site) -> None:
    """Base URL, a redirect hop and an OAuth token URL outside the connector's networks:
    each is EgressDenied, and the server outside never sees a request."""
    elsewhere_seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        elsewhere_seen.append(request.path)
        return web.json_response({"access_token": "x", "token_type": "bearer"})

    def restricted(name: str, auth: dict[str, Any], variables: list[dict[str, Any]]) -> Any:
        return {
            "apiVersion": "patchbay.dev/v1alpha1",
            "kind": "Connector",
            "metadata": {"name": name},
            "spec": {
                "driver": "http",
                "auth": auth,
                "variables": [{"key": "baseUrl", "type": "url", "required": True}, *variables],
                "verification": {"http": {"path": "/v1/me"}},
                "egress": {"networks": ["127.0.0.1/32"]},
            },
        }

    bearer = restricted(
        "restricted-bearer",
        {"type": "bearer"},
        [{"key": "token", "required": True, "secret": True}],
    )
    oauth2 = restricted(
        "restricted-oauth2",
        {"type": "oauth2ClientCredentials", "oauth2": {"tokenUrl": "{tokenUrl}"}},
        [
            {"key": "tokenUrl", "type": "url", "required": True},
            {"key": "clientId", "required": True, "secret": True},
            {"key": "clientSecret", "required": True, "secret": True},
        ],
    )
    oauth2_secret = secret_manifest("oauth2-client", clientId="id", clientSecret=site.token)
    with serve_in_thread({"/{tail:.*}": elsewhere}, host="127.0.0.3") as (outside, _):

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{outside}/v1/me")

        with serve_in_thread({"/{tail:.*}": redirect}) as (inside, _):
            site.apply(bearer, oauth2, oauth2_secret, token_secret("api-token", site.token))
            site.apply(
                http_connection("direct", outside, connector="restricted-bearer"),
                http_connection("redirected", inside, connector="restricted-bearer"),
                connection_manifest(
                    "token-elsewhere",
                    {"kind": "Connector", "name": "restricted-oauth2"},
                    {"baseUrl": inside, "tokenUrl": f"{outside}/oauth/token"},
                    "oauth2-client",
                ),
            )
            for name in ("direct", "redirected", "token-elsewhere"):
                obj = site.wait(name, "EgressDenied")
                assert "127.0.0.3" in condition(obj, "Ready")["message"]
    assert elsewhere_seen == []
