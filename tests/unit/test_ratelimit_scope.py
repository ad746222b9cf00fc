"""A connector's rateLimit is one budget for all its Connections, or one per Connection,
per credential or per host, as its scope says."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from patchbay import kube
from patchbay.api import ConnectionSpec, ConnectorSpec
from patchbay.api.common import ADMISSION
from patchbay.api.crd import render_crds
from patchbay.core.ratelimit import KeyedBuckets, budget_scope
from tests.unit.test_ratelimit import Clock
from tests.unit.test_reconciler import NS, TOKEN, World, connection, run, settle

VERIFIED = ("True", "Verified")
WAITING = ("Unknown", "RateLimited")


def one_an_hour(scope: str | None) -> dict[str, Any]:
    limit: dict[str, Any] = {"requests": 1, "per": "1h"}
    if scope is not None:
        limit["scope"] = scope
    return {"rateLimit": limit}


def token_secret(name: str, **values: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {"patchbay.dev/allowed-connections": "*"},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def reading(name: str, secret: str, key: str = "token", base_url: str = "http://api.test") -> Any:
    """A Connection whose token comes from that Secret and key."""
    return connection(
        name,
        base_url,
        credentials={"items": [{"key": "token", "secretKeyRef": {"name": secret, "key": key}}]},
    )


async def verify_all(world: World, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        await world.apply_connection(body)
    await settle()


def outcome(world: World, *pairs: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    """Per group of Connections that should share one budget: their Ready states."""
    return [sorted(world.ready(name) for name in names) for names in pairs]


@pytest.mark.parametrize("scope", [None, "Connector"])
def test_connector_scope_is_one_budget_for_all_connections_whatever_they_read(
    scope: str | None,
) -> None:
    async def scenario(world: World) -> None:
        world.api.put(kube.secret_path(NS, "other"), token_secret("other", token=TOKEN))
        await verify_all(
            world,
            reading("a", "token"),
            reading("b", "other"),
            reading("c", "other", base_url="http://elsewhere.test"),
        )

    world = run(scenario, connector_spec=one_an_hour(scope))
    assert len(world.driver.calls) == 1
    assert outcome(world, ("a", "b", "c")) == [[VERIFIED, WAITING, WAITING]]


def test_connection_scope_gives_each_connection_a_budget_of_its_own() -> None:
    async def scenario(world: World) -> None:
        await verify_all(world, connection("a"), connection("b"))
        await verify_all(world, connection("a", "http://api.test/again"))

    world = run(scenario, connector_spec=one_an_hour("Connection"))
    assert world.driver.calls == ["http://api.test", "http://api.test"]
    assert world.ready("b") == VERIFIED
    assert world.ready("a") == WAITING  # its own hour's budget is spent


def test_credential_scope_shares_a_budget_between_readers_of_the_same_secret_key() -> None:
    async def scenario(world: World) -> None:
        world.api.put(
            kube.secret_path(NS, "seller-b"), token_secret("seller-b", token=TOKEN, spare=TOKEN)
        )
        await verify_all(
            world,
            connection("a1"),  # secretRef token: the key token of Secret token
            reading("a2", "token"),
            reading("b1", "seller-b"),
            reading("b2", "seller-b", key="spare"),
        )

    world = run(scenario, connector_spec=one_an_hour("Credential"))
    assert len(world.driver.calls) == 3
    assert outcome(world, ("a1", "a2"), ("b1",), ("b2",)) == [
        [VERIFIED, WAITING],
        [VERIFIED],
        [VERIFIED],
    ]


def test_host_scope_shares_a_budget_between_connections_to_one_host() -> None:
    async def scenario(world: World) -> None:
        await verify_all(
            world,
            connection("a1", "http://api.test/v1"),
            connection("a2", "http://API.test/v2"),
            connection("b", "http://api.test:8080"),
            connection("c", "http://other.test"),
        )

    world = run(scenario, connector_spec=one_an_hour("Host"))
    assert len(world.driver.calls) == 3
    assert outcome(world, ("a1", "a2"), ("b",), ("c",)) == [
        [VERIFIED, WAITING],
        [VERIFIED],
        [VERIFIED],
    ]


def test_the_reconciler_forgets_buckets_that_refilled() -> None:
    clock = Clock()

    async def scenario(world: World) -> None:
        world.subject.buckets = KeyedBuckets(bound=4, clock=clock)
        for i in range(12):
            await verify_all(world, connection(f"c{i}"))
            clock.now += 60.0
        assert len(world.subject.buckets) <= 4

    world = run(
        scenario, connector_spec={"rateLimit": {"requests": 1, "per": "1m", "scope": "Connection"}}
    )
    assert len(world.driver.calls) == 12


# ----- the bucket a verification takes from --------------------------------------------

CONNECTOR = ConnectorSpec.model_validate(
    {
        "driver": "http",
        "variables": [
            {"key": "baseUrl", "type": "url"},
            {"key": "username", "secret": True},
            {"key": "password", "secret": True},
        ],
        "rateLimit": {"requests": 1, "per": "1m", "scope": "Credential"},
    }
)
SECRET_VARIABLES = [v for v in CONNECTOR.variables if v.secret]


def credential_of(namespace: str, credentials: dict[str, Any] | None) -> tuple[str, ...]:
    spec = ConnectionSpec.model_validate(
        {"connectorRef": {"name": "api"}, **({"credentials": credentials} if credentials else {})}
    )
    return budget_scope(CONNECTOR.rate_limit, (namespace, "c"), spec, SECRET_VARIABLES, "http:x")


def test_a_credential_is_the_same_secret_keys_however_they_are_referenced() -> None:
    by_ref = credential_of("shop", {"secretRef": {"name": "seller"}})
    by_items = credential_of(
        "shop",
        {
            "items": [
                {"key": "password", "secretKeyRef": {"name": "seller", "key": "password"}},
                {"key": "username", "secretKeyRef": {"name": "seller", "key": "username"}},
            ]
        },
    )
    assert by_ref == by_items


def test_the_same_secret_name_in_another_namespace_is_another_credential() -> None:
    ref = {"secretRef": {"name": "seller"}}
    assert credential_of("shop", ref) != credential_of("warehouse", ref)


def test_connections_without_a_credential_share_the_connectors_budget() -> None:
    assert credential_of("shop", None) == credential_of("warehouse", None) == ()


# ----- the field -------------------------------------------------------------------------


def test_an_unknown_scope_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"rateLimit\.scope"):
        ConnectorSpec.model_validate(
            {"driver": "http", "rateLimit": {"requests": 1, "per": "1m", "scope": "Tenant"}},
            context=ADMISSION,
        )


def test_the_crds_offer_the_four_scopes_with_connector_the_default() -> None:
    for name in ("patchbay.dev_connectors.yaml", "patchbay.dev_clusterconnectors.yaml"):
        crd = yaml.safe_load(render_crds()[name])
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        scope = spec["properties"]["rateLimit"]["properties"]["scope"]
        assert scope["enum"] == ["Connector", "Connection", "Credential", "Host"]
        assert scope["default"] == "Connector"
