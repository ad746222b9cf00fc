"""The reconciler's decisions, run in-process against a fake API server and a fake driver:
what is verified, when, how often, and what is written."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from patchbay import kube
from patchbay.api.reasons import Reason
from patchbay.controller import connection as reconciler
from patchbay.controller.connection import OperatorSettings, Reconciler
from patchbay.core.authorization import admission_record, scope
from patchbay.drivers.base import (
    ACCESS_TOKEN_KEY,
    EXPIRES_AT_FORMAT,
    EXPIRES_AT_KEY,
    Egress,
    VerifyOutcome,
    VerifyRequest,
)

NS = "shop"
TOKEN = "good-token-value"


def merged(target: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386) applied: objects merge key by key, null removes."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


class FakeApi:
    """Stores objects by path and answers like the API server for what the reconciler does;
    records every write, and can fail chosen requests once."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.reads: list[str] = []
        self.fail_next: dict[tuple[str, str], int] = {}
        self._versions = itertools.count(100)

    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        if "stringData" in obj:  # as the API server stores a Secret
            written = {
                k: base64.b64encode(v.encode()).decode() for k, v in obj["stringData"].items()
            }
            obj["data"] = {**(obj.get("data") or {}), **written}
            del obj["stringData"]
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        self.objects[path] = obj
        return obj

    def _maybe_fail(self, verb: str, path: str) -> None:
        left = self.fail_next.get((verb, path), 0)
        if left:
            self.fail_next[(verb, path)] = left - 1
            raise kube.KubeApiError(503, "ServiceUnavailable", "etcd is restarting")

    async def request(
        self, method: str, path: str, body: Any = None, **_: Any
    ) -> dict[str, Any] | None:
        assert method == "GET"
        return await self.get(path)

    async def get(self, path: str) -> dict[str, Any] | None:
        self._maybe_fail("GET", path)
        self.reads.append(path)
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("PATCH", path)
        self.writes.append(("PATCH", path))
        target = path.removesuffix("/status")
        obj = copy.deepcopy(self.objects.get(target) or {"metadata": {}})
        return self.put(target, merged(obj, patch))

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self._maybe_fail("PUT", path)
        self.writes.append(("PUT", path))
        if path not in self.objects:
            raise kube.KubeApiError(404, "NotFound", f"{path} not found")
        return self.put(path, body)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.writes.append(("POST", path))
        name = body["metadata"].get("name")
        if name is None:  # generateName: an Event
            return body
        if f"{path}/{name}" in self.objects:
            raise kube.KubeApiError(409, "AlreadyExists", f"{name} already exists")
        return self.put(f"{path}/{name}", body)

    def count(self, verb: str, suffix: str) -> int:
        return sum(1 for v, p in self.writes if v == verb and p.endswith(suffix))


@dataclass
class FakeHttpDriver:
    """Answers like a token API: the right token verifies; a host named 'blackhole' never
    answers within the timeout."""

    name: str = "http"
    calls: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    accept: str = TOKEN
    # refresh tokens presented, and the one the fake token endpoint takes next (it rotates)
    refreshes: list[str] = field(default_factory=list)
    refresh: str = "rt-0"
    # how long the access tokens it grants live, and whether its token endpoint is down
    access_lifetime: timedelta = timedelta(hours=1)
    token_endpoint_down: bool = False

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        base_url = str(request.config["baseUrl"])
        self.calls.append(base_url)
        if request.auth.type == "oauth2RefreshToken":
            presented = request.secrets.get("refreshToken", "")
            self.refreshes.append(presented)
            if self.token_endpoint_down:
                return VerifyOutcome("Failed", Reason.PROVIDER_ERROR, "token endpoint: HTTP 503")
            if presented != self.refresh:
                return VerifyOutcome(
                    "Failed", Reason.AUTHENTICATION_FAILED, "invalid_grant", retryable=False
                )
            self.refresh = request.issued["refreshToken"] = f"rt-{len(self.refreshes)}"
            if request.keep_access_token:
                expires = datetime.now(UTC) + self.access_lifetime
                request.granted[ACCESS_TOKEN_KEY] = f"at-{len(self.refreshes)}"
                request.granted[EXPIRES_AT_KEY] = expires.strftime(EXPIRES_AT_FORMAT)
            return VerifyOutcome("Succeeded", Reason.VERIFIED, "connected and authenticated")
        if "blackhole" in base_url:
            await self.release.wait()
        if request.secrets.get("token") != self.accept:
            return VerifyOutcome("Failed", Reason.AUTHENTICATION_FAILED, "HTTP 401")
        return VerifyOutcome("Succeeded", Reason.VERIFIED, "connected and authenticated")


def connector(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "ClusterConnector",
        "metadata": {"name": "api", "uid": "c-1", "generation": 1},
        "spec": {
            "driver": "http",
            "auth": {"type": "bearer"},
            "variables": [
                {"key": "baseUrl", "type": "url", "required": True},
                {"key": "token", "required": True, "secret": True},
            ],
            "verification": {"http": {"path": "/"}},
            **spec,
        },
    }


def connection(name: str, base_url: str = "http://api.test", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"u-{name}",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"patchbay.dev/connector": "api", "patchbay.dev/driver": "http"},
        },
        "spec": {
            "connectorRef": {"kind": "ClusterConnector", "name": "api"},
            "config": {"baseUrl": base_url},
            "credentials": {"secretRef": {"name": "token"}},
            **spec,
        },
    }


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def secret(value: str, allowed: str | None = "*") -> dict[str, Any]:
    annotations = {"patchbay.dev/allowed-connections": allowed} if allowed is not None else {}
    return {
        "metadata": {"name": "token", "namespace": NS, "annotations": annotations},
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }


@dataclass
class World:
    api: FakeApi
    driver: FakeHttpDriver
    subject: Reconciler

    async def apply_connection(self, body: dict[str, Any]) -> None:
        stored = self.api.put(kube.connection_path(NS, body["metadata"]["name"]), body)
        await self.subject.connection_changed(stored)

    async def echo_status(self, name: str) -> None:
        """The watch event of the operator's own last status write."""
        await self.subject.connection_changed(self.api.objects[kube.connection_path(NS, name)])

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.api.objects[kube.connection_path(NS, name)].get("status", {})
        return status

    def ready(self, name: str) -> tuple[str, str]:
        """Ready's status and reason; (False, Suspended) for a suspended Connection,
        which has no Ready condition."""
        status = self.status(name)
        if status.get("phase") == "Suspended":
            assert not any(c["type"] == "Ready" for c in status.get("conditions", []))
            return "False", status["reason"]
        ready = next(c for c in status.get("conditions", []) if c["type"] == "Ready")
        return ready["status"], ready["reason"]


_worlds: list[World] = []  # the world of the running scenario, for settle()


async def settle(seconds: float = 0.05, *, idle: bool = True) -> None:
    """Let the reconciler work: at least ``seconds`` and, unless a verification is held
    on purpose, until its queue is idle."""
    await asyncio.sleep(seconds)
    for _ in range(500 if idle else 0):
        await asyncio.sleep(0.01)
        if all(world.subject.queue.idle for world in _worlds):
            return


def run(
    scenario: Callable[[World], Awaitable[None]],
    *,
    connector_spec: dict[str, Any] | None = None,
    workers: int = 4,
) -> World:
    async def main() -> World:
        api = FakeApi()
        api.put(
            kube.connector_path("ClusterConnector", None, "api"),
            connector(**(connector_spec or {})),
        )
        api.put(kube.secret_path(NS, "token"), secret(TOKEN))
        driver = FakeHttpDriver()
        subject = Reconciler(
            api,  # type: ignore[arg-type]
            {"http": driver},
            OperatorSettings(max_concurrent_verifications=workers),
        )
        world = World(api, driver, subject)
        _worlds[:] = [world]
        try:
            await scenario(world)
        finally:
            driver.release.set()
            await subject.close()
        return world

    return asyncio.run(main())


def test_new_connection_is_verified_once_with_one_status_patch_binding_and_event() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        await world.echo_status("orders")
        await settle()

    world = run(scenario)
    assert world.driver.calls == ["http://api.test"]
    assert world.ready("orders") == ("True", "Verified")
    assert world.api.count("PATCH", "/orders/status") == 1
    assert world.api.count("POST", "/secrets") == 1  # the binding, created
    assert world.api.count("PUT", "/orders-binding") == 0
    assert world.api.count("POST", "/events") == 1


def test_a_secret_of_the_binding_name_owned_by_another_is_never_written() -> None:
    foreign = {"metadata": {"name": "orders-binding", "namespace": NS}, "data": {"x": "eA=="}}

    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "orders-binding"), foreign)
        await world.apply_connection(connection("orders"))
        await settle()

    world = run(scenario)
    assert world.ready("orders") == ("False", "BindingConflict")
    assert world.status("orders").get("binding") is None
    assert world.api.count("PUT", "/orders-binding") == 0
    assert world.api.objects[kube.secret_path(NS, "orders-binding")]["data"] == foreign["data"]


def test_a_binding_this_connection_owns_already_is_updated_after_a_restart() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        world.api.put(kube.secret_path(NS, "token"), secret("rotated-but-accepted"))
        world.subject.cache.tracked[(NS, "orders")].binding_digest = None  # a new process
        world.driver.accept = "rotated-but-accepted"
        await world.subject.secret_changed(NS, "token", "999")
        await settle()

    world = run(scenario)
    assert world.ready("orders") == ("True", "Verified")
    assert world.api.count("PUT", "/orders-binding") == 1
    binding = world.api.objects[kube.secret_path(NS, "orders-binding")]
    assert decoded(binding)["token"] == "rotated-but-accepted"


def test_rotated_secret_reverifies_without_editing_the_connection() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        rotated = world.api.put(kube.secret_path(NS, "token"), secret("revoked-token"))
        await world.subject.secret_changed(NS, "token", rotated["metadata"]["resourceVersion"])
        await settle()

    world = run(scenario)
    assert len(world.driver.calls) == 2
    assert world.ready("orders") == ("False", "AuthenticationFailed")


def test_an_unrelated_secret_change_verifies_nothing() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        await world.subject.secret_changed(NS, "someone-elses", "999")
        await settle()

    assert len(run(scenario).driver.calls) == 1


def test_a_change_during_verification_is_verified_after_it_never_alongside() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("slow", "http://blackhole.test"))
        await settle(idle=False)
        edited = connection("slow", "http://api.test")
        edited["metadata"]["generation"] = 2
        await world.apply_connection(edited)
        await settle(idle=False)
        assert world.driver.calls == ["http://blackhole.test"]  # not a second one alongside
        world.driver.release.set()
        await settle()

    world = run(scenario)
    assert world.driver.calls == ["http://blackhole.test", "http://api.test"]


def test_api_errors_on_the_status_write_are_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "API_RETRY_SECONDS", 0.01)

    async def scenario(world: World) -> None:
        world.api.fail_next[("PATCH", kube.connection_path(NS, "orders") + "/status")] = 2
        await world.apply_connection(connection("orders"))
        await settle(0.3)

    world = run(scenario)
    assert world.ready("orders") == ("True", "Verified")


def test_connector_rate_limit_verifies_within_budget_and_says_why_others_wait() -> None:
    async def scenario(world: World) -> None:
        for name in ("a", "b", "c"):
            await world.apply_connection(connection(name))
        await settle()

    world = run(scenario, connector_spec={"rateLimit": {"requests": 1, "per": "1h"}})
    assert len(world.driver.calls) == 1
    assert sorted(world.ready(n) for n in ("a", "b", "c")) == [
        ("True", "Verified"),
        ("Unknown", "RateLimited"),
        ("Unknown", "RateLimited"),
    ]


def test_a_connection_deleted_while_verified_is_not_looked_at_again() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("gone", "http://blackhole.test"))
        await settle(idle=False)
        await world.subject.connection_deleted(NS, "gone")
        world.driver.release.set()
        await settle()
        assert world.subject.queue.waiting((NS, "gone")) is None
        assert len(world.subject.queue) == 0

    run(scenario)


def test_connector_count_is_exact_after_creates_and_deletes() -> None:
    async def scenario(world: World) -> None:
        for i in range(5):
            await world.apply_connection(connection(f"c{i}"))
        await settle()
        await world.subject.connection_deleted(NS, "c0")
        await world.subject.connection_deleted(NS, "c1")
        await settle(1.3)  # the count is written in a batch after a second

    world = run(scenario)
    stored = world.api.objects[kube.connector_path("ClusterConnector", None, "api")]
    assert stored["status"]["connections"] == 3


def test_a_host_that_never_answers_holds_only_its_own_share_of_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler, "PER_DESTINATION", 2)

    async def scenario(world: World) -> None:
        for i in range(6):
            await world.apply_connection(connection(f"dead{i}", "http://blackhole.test"))
        for i in range(6):
            await world.apply_connection(connection(f"live{i}"))
        await settle(0.2, idle=False)

    world = run(scenario, workers=4)
    assert world.driver.calls.count("http://blackhole.test") == 2
    assert world.driver.calls.count("http://api.test") == 6


def test_a_replica_standing_by_verifies_nothing_until_it_works() -> None:
    async def scenario(world: World) -> None:
        world.subject.working.clear()
        await world.apply_connection(connection("orders"))
        await settle(0.1, idle=False)
        assert world.driver.calls == []
        world.subject.working.set()
        await settle()

    world = run(scenario)
    assert world.driver.calls == ["http://api.test"]


def test_a_secret_neither_recorded_nor_opted_in_is_never_used() -> None:
    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), secret(TOKEN, allowed=None))
        await world.apply_connection(connection("orders"))
        await settle()

    world = run(scenario)
    assert world.driver.calls == []
    assert world.ready("orders") == ("False", "SecretNotAuthorized")
    assert world.status("orders")["verification"]["error"]["retryable"] is False
    assert world.api.count("POST", "/secrets") == 0  # no binding


def test_a_secret_allowing_other_connections_only_is_not_used() -> None:
    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), secret(TOKEN, allowed="reports"))
        await world.apply_connection(connection("orders"))
        await settle()

    world = run(scenario)
    assert world.driver.calls == []
    assert world.ready("orders") == ("False", "SecretNotAuthorized")


def test_an_admission_record_for_this_spec_authorises_its_secrets() -> None:
    key = b"admission-key-for-the-test-32byt"

    async def scenario(world: World) -> None:
        world.subject.admission_key = key
        world.api.put(kube.secret_path(NS, "token"), secret(TOKEN, allowed=None))
        body = connection("orders")
        record = admission_record(key, scope(NS, "orders", body["spec"]))
        body["metadata"]["annotations"] = {"patchbay.dev/authorization": record}
        await world.apply_connection(body)
        await settle()

    world = run(scenario)
    assert world.ready("orders") == ("True", "Verified")


def test_a_record_made_for_another_host_does_not_authorise_this_one() -> None:
    key = b"admission-key-for-the-test-32byt"

    async def scenario(world: World) -> None:
        world.subject.admission_key = key
        world.api.put(kube.secret_path(NS, "token"), secret(TOKEN, allowed=None))
        admitted = connection("orders")
        record = admission_record(key, scope(NS, "orders", admitted["spec"]))
        redirected = connection("orders", "http://attacker.test")
        redirected["metadata"]["annotations"] = {"patchbay.dev/authorization": record}
        await world.apply_connection(redirected)
        await settle()

    world = run(scenario)
    assert world.driver.calls == []
    assert world.ready("orders") == ("False", "SecretNotAuthorized")


def test_own_checks_on_a_connector_that_does_not_allow_them_are_config_invalid() -> None:
    async def scenario(world: World) -> None:
        own = connection(
            "orders", verification={"checks": [{"type": "http", "http": {"path": "/admin"}}]}
        )
        await world.apply_connection(own)
        await settle()

    world = run(scenario)
    assert world.driver.calls == []
    assert world.ready("orders") == ("False", "ConfigInvalid")
    message = world.status("orders")["verification"]["error"]["message"]
    assert "allowConnectionChecks" in message


def test_a_new_connection_reads_its_secret_once_and_a_rotation_verifies_it_again() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        await world.echo_status("orders")
        await settle()
        assert world.api.reads.count(kube.secret_path(NS, "token")) == 1
        assert len(world.driver.calls) == 1  # the hash it stored is the one it computes now
        rotated = world.api.put(kube.secret_path(NS, "token"), secret("revoked-token"))
        await world.subject.secret_changed(NS, "token", rotated["metadata"]["resourceVersion"])
        await settle()

    world = run(scenario)
    assert len(world.driver.calls) == 2
    assert world.ready("orders") == ("False", "AuthenticationFailed")


REFRESHING = {
    "auth": {"type": "oauth2RefreshToken", "oauth2": {"tokenUrl": "http://api.test/token"}},
    "variables": [
        {"key": "baseUrl", "type": "url", "required": True},
        {"key": "clientId", "required": True, "secret": True},
        {"key": "refreshToken", "required": True, "secret": True},
    ],
}


def oauth_secret(refresh_token: str) -> dict[str, Any]:
    values = {"clientId": "billing", "refreshToken": refresh_token}
    return {
        "metadata": {
            "name": "token",
            "namespace": NS,
            "annotations": {"patchbay.dev/allowed-connections": "*"},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


async def verify_again(world: World, name: str, when: str) -> None:
    body = copy.deepcopy(world.api.objects[kube.connection_path(NS, name)])
    body["metadata"].setdefault("annotations", {})["patchbay.dev/verify-requested-at"] = when
    await world.apply_connection(body)
    await settle()


def test_rotated_refresh_tokens_are_kept_by_the_operator_across_a_restart() -> None:
    state_path = kube.secret_path(NS, "orders-token-state")

    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-0"))
        await world.apply_connection(connection("orders"))
        await settle()
        await verify_again(world, "orders", "1")
        # a new operator process: nothing in memory, the kept token is read back
        await world.subject.close()
        world.subject = Reconciler(
            world.api,  # type: ignore[arg-type]
            {"http": world.driver},
            OperatorSettings(max_concurrent_verifications=4),
        )
        _worlds[:] = [world]
        await verify_again(world, "orders", "2")

    world = run(scenario, connector_spec=REFRESHING)
    assert world.driver.refreshes == ["rt-0", "rt-1", "rt-2"]
    assert world.ready("orders") == ("True", "Verified")
    # the user's Secret is never written; the state Secret is the operator's, owned
    users = world.api.objects[kube.secret_path(NS, "token")]
    assert decoded(users) == {"clientId": "billing", "refreshToken": "rt-0"}
    assert not any(path.endswith("/secrets/token") for _, path in world.api.writes)
    state = world.api.objects[state_path]
    assert decoded(state) == {"refreshToken": "rt-3"}
    assert state["metadata"]["ownerReferences"][0]["uid"] == "u-orders"
    binding = world.api.objects[kube.secret_path(NS, "orders-binding")]
    assert decoded(binding)["refreshToken"] == "rt-3"


def test_new_credentials_in_the_users_secret_win_over_a_kept_token() -> None:
    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-0"))
        await world.apply_connection(connection("orders"))
        await settle()
        # the token endpoint revoked everything; the user authorised again
        world.driver.refresh = "rt-fresh"
        renewed = world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-fresh"))
        await world.subject.secret_changed(NS, "token", renewed["metadata"]["resourceVersion"])
        await settle()

    world = run(scenario, connector_spec=REFRESHING)
    assert world.driver.refreshes == ["rt-0", "rt-fresh"]
    assert world.ready("orders") == ("True", "Verified")


def test_a_revoked_refresh_token_fails_once_and_is_not_retried_before_its_time() -> None:
    async def scenario(world: World) -> None:
        world.driver.refresh = "rt-somebody-elses"
        world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-0"))
        await world.apply_connection(connection("orders"))
        await settle(0.5)
        await world.echo_status("orders")
        await settle(0.5)

    world = run(scenario, connector_spec=REFRESHING)
    assert world.driver.refreshes == ["rt-0"]
    assert world.ready("orders") == ("False", "AuthenticationFailed")
    assert world.status("orders")["verification"]["error"]["retryable"] is False


BOUND_TOKEN = {"binding": {"accessToken": True}}


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, EXPIRES_AT_FORMAT).replace(tzinfo=UTC)


def test_the_binding_carries_an_access_token_renewed_before_it_expires() -> None:
    binding_path = kube.secret_path(NS, "orders-binding")
    tokens: list[dict[str, str]] = []

    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-0"))
        await world.apply_connection(connection("orders", **BOUND_TOKEN))
        await settle()
        tokens.append(decoded(world.api.objects[binding_path]))
        await verify_again(world, "orders", "renewal")
        tokens.append(decoded(world.api.objects[binding_path]))

    world = run(scenario, connector_spec=REFRESHING)
    assert [t[ACCESS_TOKEN_KEY] for t in tokens] == ["at-1", "at-2"]
    expires = parse_time(tokens[1][EXPIRES_AT_KEY])
    verification = world.status("orders")["verification"]
    next_time = datetime.fromisoformat(verification["nextTime"])
    last = datetime.fromisoformat(verification["lastAttemptTime"])
    # renewed five minutes before the hour-long token expires, not at the hourly interval
    assert expires - timedelta(minutes=6) < next_time <= expires - timedelta(minutes=5)
    assert next_time < last + timedelta(hours=1)
    assert "at-" not in str(world.status("orders"))


def test_a_failed_renewal_leaves_workloads_the_token_until_it_expires() -> None:
    binding_path = kube.secret_path(NS, "orders-binding")

    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "token"), oauth_secret("rt-0"))
        await world.apply_connection(connection("orders", **BOUND_TOKEN))
        await settle()
        world.driver.token_endpoint_down = True
        await verify_again(world, "orders", "endpoint down")
        assert decoded(world.api.objects[binding_path])[ACCESS_TOKEN_KEY] == "at-1"
        # once it has expired, the binding no longer offers it
        binding = world.api.objects[binding_path]
        past = (datetime.now(UTC) - timedelta(minutes=1)).strftime(EXPIRES_AT_FORMAT)
        binding["data"][EXPIRES_AT_KEY] = base64.b64encode(past.encode()).decode()
        await verify_again(world, "orders", "still down")

    world = run(scenario, connector_spec=REFRESHING)
    assert world.ready("orders") == ("False", "ProviderError")
    left = decoded(world.api.objects[binding_path])
    assert ACCESS_TOKEN_KEY not in left and EXPIRES_AT_KEY not in left
    assert left["clientId"] == "billing"


def test_an_access_token_in_the_binding_without_an_oauth_grant_is_config_invalid() -> None:
    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders", **BOUND_TOKEN))
        await settle()

    world = run(scenario)
    assert world.ready("orders") == ("False", "ConfigInvalid")
    assert "spec.binding.accessToken" in world.status("orders")["verification"]["error"]["message"]
    assert world.driver.calls == []


async def set_suspend(world: World, name: str, suspend: bool) -> None:
    body = copy.deepcopy(world.api.objects[kube.connection_path(NS, name)])
    body["spec"]["suspend"] = suspend
    body["metadata"]["generation"] += 1
    await world.apply_connection(body)
    await settle()
    await world.echo_status(name)
    await settle()


def test_a_suspended_connections_binding_holds_no_credentials_until_verified_again() -> None:
    binding_path = kube.secret_path(NS, "orders-binding")
    seen: list[dict[str, str]] = []
    statuses: list[Any] = []

    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders"))
        await settle()
        await set_suspend(world, "orders", True)
        seen.append(decoded(world.api.objects[binding_path]))
        statuses.append(world.status("orders")["binding"])
        # resumed while the token is refused: still nothing to use
        world.driver.accept = "another-token"
        await set_suspend(world, "orders", False)
        seen.append(decoded(world.api.objects[binding_path]))
        statuses.append(world.status("orders")["binding"])
        world.driver.accept = TOKEN
        await verify_again(world, "orders", "fixed")
        seen.append(decoded(world.api.objects[binding_path]))
        statuses.append(world.status("orders")["binding"])

    world = run(scenario)
    suspended, failed, verified = seen
    assert suspended == {"type": "http", "provider": "patchbay", "suspended": "true"}
    assert failed == suspended
    assert verified["token"] == TOKEN and "suspended" not in verified
    withheld = {"name": "orders-binding", "credentialsWithheld": True}
    assert statuses == [withheld, withheld, {"name": "orders-binding"}]
    assert world.ready("orders") == ("True", "Verified")


def test_a_connection_may_keep_its_binding_while_suspended() -> None:
    binding_path = kube.secret_path(NS, "orders-binding")

    async def scenario(world: World) -> None:
        await world.apply_connection(connection("orders", binding={"keepWhileSuspended": True}))
        await settle()
        await set_suspend(world, "orders", True)

    world = run(scenario)
    assert world.ready("orders") == ("False", "Suspended")
    assert decoded(world.api.objects[binding_path])["token"] == TOKEN
    assert world.status("orders")["binding"] == {"name": "orders-binding"}
