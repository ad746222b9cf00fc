"""The egress policy keeps verification traffic away from metadata and host endpoints."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core import egress
from patchbay.core.egress import EgressPolicy, connector_egress, host_matches, parse_networks
from patchbay.drivers.base import DriverError

DEFAULT = EgressPolicy()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def refusal(policy: EgressPolicy, host: str, port: int = 80) -> DriverError:
    """The error with which ``policy`` refuses to resolve ``host``."""
    with pytest.raises(DriverError) as caught:
        asyncio.run(policy.resolve(host, port))
    return caught.value


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack metadata
        "169.254.0.1",
        "fe80::1",
        "fd00:ec2::254",  # AWS IPv6 metadata
        "::ffff:169.254.169.254",  # IPv4-mapped IPv6 form of the metadata address
        "::ffff:a9fe:a9fe",
        "100.100.100.200",  # Alibaba metadata
        "168.63.129.16",  # Azure host endpoint
        "0.0.0.0",
        "::",
        "::ffff:0.0.0.0",
    ],
)
def test_default_policy_denies_metadata_and_unspecified_addresses(address: str) -> None:
    assert DEFAULT.permits(_ip(address)) is False


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.10", "8.8.8.8"])
def test_default_policy_allows_loopback_and_ordinary_addresses(address: str) -> None:
    assert DEFAULT.permits(_ip(address)) is True


def test_allow_list_restricts_to_the_listed_networks() -> None:
    policy = EgressPolicy(allowed=parse_networks(["10.0.0.0/8", " 127.0.0.2 ", ""]))

    assert policy.permits(_ip("10.1.2.3"))
    assert policy.permits(_ip("127.0.0.2"))
    assert not policy.permits(_ip("127.0.0.1"))
    assert not policy.permits(_ip("192.168.1.10"))
    assert not policy.permits(_ip("::1"))


def test_allow_list_applies_to_the_ipv4_mapped_form_too() -> None:
    policy = EgressPolicy(allowed=parse_networks(["10.0.0.0/8"]))

    assert policy.permits(_ip("::ffff:10.0.0.1"))
    assert not policy.permits(_ip("::ffff:192.168.0.1"))


def test_deny_wins_over_allow() -> None:
    policy = EgressPolicy(allowed=parse_networks(["169.254.0.0/16", "0.0.0.0/0"]))

    assert not policy.permits(_ip("169.254.169.254"))
    assert policy.permits(_ip("192.0.2.1"))


def test_resolving_a_denied_ip_literal_raises_egress_denied() -> None:
    error = refusal(DEFAULT, "169.254.169.254")
    assert error.code == Reason.EGRESS_DENIED
    assert error.retryable is False
    assert "169.254.169.254" in error.message


def test_resolving_a_bracketed_denied_ipv6_literal_raises_egress_denied() -> None:
    error = refusal(DEFAULT, "[fd00:ec2::254]", 443)
    assert error.code == Reason.EGRESS_DENIED


def test_resolving_an_ipv4_mapped_metadata_literal_raises_egress_denied() -> None:
    error = refusal(DEFAULT, "::ffff:169.254.169.254")
    assert error.code == Reason.EGRESS_DENIED


def test_resolving_a_permitted_ip_literal_returns_it_unchanged() -> None:
    assert asyncio.run(DEFAULT.resolve("127.0.0.1", 5432)) == [_ip("127.0.0.1")]
    assert asyncio.run(DEFAULT.resolve("[::1]", 5432)) == [_ip("::1")]


def test_resolving_localhost_is_allowed_by_default_and_yields_only_loopback() -> None:
    addresses = asyncio.run(DEFAULT.resolve("localhost", 5432))

    assert addresses
    assert all(address.is_loopback for address in addresses)


def test_resolving_localhost_is_denied_when_loopback_is_not_allowed() -> None:
    policy = EgressPolicy(allowed=parse_networks(["10.0.0.0/8"]))

    error = refusal(policy, "localhost", 5432)
    assert error.code == Reason.EGRESS_DENIED
    assert "localhost" in error.message


@pytest.mark.parametrize("address", ["::169.254.169.254", "64:ff9b::a9fe:a9fe"])
def test_ipv6_forms_embedding_a_metadata_address_are_denied(address: str) -> None:
    assert not EgressPolicy().permits(ipaddress.ip_address(address))


# --- hosts written as addresses in the forms inet_aton accepts -------------------------

LOOPBACK_DENIED = EgressPolicy(denied=parse_networks(["127.0.0.0/8"]))
LEGACY_LOOPBACK_FORMS = ["2130706433", "127.1", "017700000001", "0x7f.1", "0177.0.0.1"]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Hosts the policy asked the resolver about."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["192.0.2.1"]

    monkeypatch.setattr(egress, "resolve", resolve)
    return asked


@pytest.mark.parametrize("host", LEGACY_LOOPBACK_FORMS)
def test_legacy_ipv4_forms_are_checked_as_the_address_they_stand_for(
    host: str, lookups: list[str]
) -> None:
    error = refusal(LOOPBACK_DENIED, host)
    assert error.code == Reason.EGRESS_DENIED
    assert "127.0.0.1" in error.message
    assert lookups == []


@pytest.mark.parametrize("host", LEGACY_LOOPBACK_FORMS)
def test_permitted_legacy_ipv4_forms_resolve_to_the_canonical_address(
    host: str, lookups: list[str]
) -> None:
    assert asyncio.run(DEFAULT.resolve(host, 80)) == [_ip("127.0.0.1")]
    assert lookups == []


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("[::ffff:a9fe:a9fe]", "::ffff:a9fe:a9fe"),
        ("[0:0:0:0:0:FFFF:169.254.169.254]", "::ffff:a9fe:a9fe"),
    ],
)
def test_metadata_address_in_any_literal_form_is_denied_by_default(
    host: str, address: str, lookups: list[str]
) -> None:
    error = refusal(DEFAULT, host)
    assert error.code == Reason.EGRESS_DENIED
    assert address in error.message
    assert lookups == []


@pytest.mark.parametrize("host", ["::ffff:127.1", "127.0.0.1.", "1.2.3.4.5", "999.1", "db.42"])
def test_numeric_host_that_is_no_valid_address_is_config_invalid_without_a_lookup(
    host: str, lookups: list[str]
) -> None:
    error = refusal(DEFAULT, host)
    assert error.code == Reason.CONFIG_INVALID
    assert lookups == []


@pytest.mark.parametrize("host", ["cafe", "0xcafe.example", "db.orders.svc", "1e100.net"])
def test_host_names_that_merely_contain_digits_or_hex_are_looked_up(
    host: str, lookups: list[str]
) -> None:
    assert egress.address_literal(host) is None
    assert asyncio.run(DEFAULT.resolve(host, 80)) == [_ip("192.0.2.1")]
    assert lookups == [host]


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.com.", True),
        ("api.example.com", "x.api.example.com", False),
        ("*.myshopify.com", "shop.myshopify.com", True),
        ("*.myshopify.com", "a.b.myshopify.com", True),
        ("*.myshopify.com", "myshopify.com", False),
        ("*.myshopify.com", "evilmyshopify.com", False),
        ("*.myshopify.com", "shop.myshopify.com.evil.test", False),
    ],
)
def test_connector_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


class CountingPolicy(EgressPolicy):
    """The default policy, counting lookups."""

    lookups: list[str]

    async def resolve(
        self, host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]


def restricted(**egress_spec: list[str]) -> tuple[CountingPolicy, object]:
    policy = CountingPolicy()
    object.__setattr__(policy, "lookups", [])
    connector = ConnectorSpec.model_validate({"driver": "http", "egress": egress_spec})
    return policy, connector_egress(policy, connector)


def test_a_host_outside_the_connectors_hosts_is_denied_without_a_lookup() -> None:
    policy, allowed = restricted(hosts=["*.myshopify.com"])
    assert asyncio.run(allowed.resolve("shop.myshopify.com", 443))  # type: ignore[attr-defined]
    with pytest.raises(DriverError) as caught:
        asyncio.run(allowed.resolve("attacker.test", 443))  # type: ignore[attr-defined]
    assert caught.value.code == Reason.EGRESS_DENIED
    assert "attacker.test" in caught.value.message
    assert policy.lookups == ["shop.myshopify.com"]


def test_a_host_resolving_into_the_connectors_networks_passes() -> None:
    _, inside = restricted(networks=["127.0.0.0/8"])
    assert asyncio.run(inside.resolve("db.internal", 5432))  # type: ignore[attr-defined]
    _, outside = restricted(networks=["10.0.0.0/8"])
    with pytest.raises(DriverError) as caught:
        asyncio.run(outside.resolve("db.internal", 5432))  # type: ignore[attr-defined]
    assert caught.value.code == Reason.EGRESS_DENIED


def test_a_connector_without_egress_leaves_the_policy_alone() -> None:
    policy = EgressPolicy()
    assert connector_egress(policy, ConnectorSpec.model_validate({"driver": "http"})) is policy


def test_a_connector_network_that_is_no_cidr_makes_the_connector_invalid() -> None:
    with pytest.raises(ValueError, match="is not a CIDR"):
        ConnectorSpec.model_validate({"driver": "http", "egress": {"networks": ["10.0.0.0/33"]}})
