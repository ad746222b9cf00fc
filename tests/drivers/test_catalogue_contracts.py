"""Each SaaS entry of the catalogue against a local server that answers as its vendor documents.

The connector is read from deploy/connectors/, the Connection's config and
credentials go through the operator's own resolution functions, and the
driver runs under the shared verification runner with an egress policy that
allows loopback only. Every URL variable is pointed at the local server, so
nothing here reaches a vendor.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from patchbay.api import ClusterConnector
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.core.config import ConfigValue, resolve_config
from patchbay.core.credentials import resolve_credentials
from patchbay.core.egress import EgressPolicy, host_matches, parse_networks
from patchbay.core.schedule import parse_duration
from patchbay.core.verification import build_verify_request, run_verification
from patchbay.drivers import available_drivers
from patchbay.drivers.base import VerifyOutcome
from saas_contracts import CONTRACTS, Case, Contract, VendorServer, serve_vendor
from tests.conftest import REPO_ROOT

CATALOGUE = REPO_ROOT / "deploy" / "connectors"
# Entries that are not SaaS products: they have tests of their own.
# SaaS entries are http-driver entries other than the generic one.
GENERIC_HTTP_ENTRY = "http-api"
# Self-hosted products, or vendors that give each partner its own host.
NO_VENDOR_HOST = {"mlflow", "flexiroam"}
LOOPBACK_ONLY = EgressPolicy(allowed=parse_networks(["127.0.0.0/8", "::1/128"]))
SECRET_NAME = "vendor-credentials"


def _connector(name: str) -> ConnectorSpec:
    return ClusterConnector.model_validate(
        yaml.safe_load((CATALOGUE / f"{name}.yaml").read_text())
    ).spec


def _url_variables(spec: ConnectorSpec) -> list[str]:
    return [v.key for v in spec.variables if v.type == "url"]


def _vendor_urls(contract: Contract, spec: ConnectorSpec) -> dict[str, str]:
    """The URL variables as the catalogue defaults make them for the contract's tenant."""
    without_default = {
        v.key: "https://placeholder.invalid"
        for v in spec.variables
        if v.type == "url" and v.default is None
    }
    values = resolve_config(spec, {**contract.config, **without_default}).values
    return {key: str(values[key]) for key in _url_variables(spec) if key not in without_default}


def _local_config(
    contract: Contract, spec: ConnectorSpec, server: VendorServer
) -> dict[str, ConfigValue]:
    """The contract's tenant config with every URL moved to the local server, path kept."""
    vendor = _vendor_urls(contract, spec)
    local: dict[str, ConfigValue] = dict(contract.config)
    for key in _url_variables(spec):
        path = urlsplit(vendor[key]).path.rstrip("/") if key in vendor else ""
        local[key] = server.origin + path
    return local


async def _verify(contract: Contract, case: Case) -> tuple[VerifyOutcome, VendorServer]:
    spec = _connector(contract.connector)
    async with serve_vendor(contract) as server:
        connection = ConnectionSpec.model_validate(
            {
                "connectorRef": {"name": contract.connector},
                "config": _local_config(contract, spec, server),
                "credentials": {"secretRef": {"name": SECRET_NAME}},
            }
        )
        config = resolve_config(spec, connection.config)
        for key in _url_variables(spec):
            host = urlsplit(str(config.values[key])).hostname
            assert host is not None and ipaddress.ip_address(host).is_loopback, key
        credentials = resolve_credentials(
            connection, config.secret_variables, {SECRET_NAME: case.secrets}
        )
        timeout = parse_duration(spec.verification.timeout)
        request = build_verify_request(spec, connection, config, credentials, timeout)
        outcome, _ = await run_verification(
            available_drivers()[spec.driver], request, egress=LOOPBACK_ONLY, timeout_seconds=timeout
        )
    return outcome, server


def _case_id(value: object) -> str:
    return value.name if isinstance(value, Case) else str(getattr(value, "connector", value))


@pytest.mark.parametrize(
    ("contract", "case"),
    [(contract, case) for contract in CONTRACTS for case in contract.cases],
    ids=lambda value: _case_id(value),
)
def test_catalogue_entry_reports_what_its_vendor_answers(contract: Contract, case: Case) -> None:
    outcome, server = asyncio.run(_verify(contract, case))

    assert outcome.code == case.expect, (
        f"{outcome.code}: {outcome.message} (server saw {server.seen})"
    )
    for value in case.secrets.values():
        assert value not in outcome.message
    # Each request reached the vendor's documented endpoint, not a 404 elsewhere,
    # and the API was called only with an access token in hand.
    assert server.seen == _expected_requests(contract, case)


def _expected_requests(contract: Contract, case: Case) -> list[str]:
    """One token request for OAuth 2.0 entries, then the verification request."""
    api = f"{contract.api.method} {urlsplit(contract.api.path).path}"
    if contract.api.token_endpoint is None:
        return [api]
    token = f"POST {contract.api.token_endpoint.path}"
    return [token] if case.refused_by_token_endpoint else [token, api]


def test_every_saas_entry_of_the_catalogue_has_a_contract() -> None:
    entries = {
        path.stem
        for path in CATALOGUE.glob("*.yaml")
        if path.stem != GENERIC_HTTP_ENTRY and _connector(path.stem).driver == "http"
    }
    assert entries == {contract.connector for contract in CONTRACTS}


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.connector)
def test_catalogue_urls_default_to_the_vendor_and_contracts_replace_every_one(
    contract: Contract,
) -> None:
    spec = _connector(contract.connector)
    vendor = _vendor_urls(contract, spec)
    if contract.connector in NO_VENDOR_HOST:
        assert vendor == {}
        assert [v.required for v in spec.variables if v.key == "baseUrl"] == [True]
    else:
        assert "baseUrl" in vendor
    for key, url in vendor.items():
        host = urlsplit(url).hostname or ""
        assert urlsplit(url).scheme == "https", (key, url)
        assert not _is_ip(host) and "." in host, (key, url)
    local = _local_config(contract, spec, VendorServer(contract, origin="http://127.0.0.1:1"))
    assert {k for k, v in local.items() if str(v).startswith("http://127.0.0.1:1")} == set(
        _url_variables(spec)
    )


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.connector)
def test_each_vendor_entry_lets_its_connections_reach_its_vendor_hosts_only(
    contract: Contract,
) -> None:
    spec = _connector(contract.connector)
    if contract.connector in NO_VENDOR_HOST:
        assert spec.egress is None  # self-hosted or per-partner hosts: docs/connectors.md
        return
    assert spec.egress is not None and spec.egress.hosts
    for key, url in _vendor_urls(contract, spec).items():
        host = urlsplit(url).hostname or ""
        assert any(host_matches(p, host) for p in spec.egress.hosts), (key, host)
        look_alikes = (
            f"{host}.attacker.test",
            host.rsplit(".", 1)[0] + ".attacker",
            "attacker.test",
        )
        for elsewhere in look_alikes:
            assert not any(host_matches(p, elsewhere) for p in spec.egress.hosts), elsewhere


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def test_catalogue_yaml_files_are_named_after_their_entry() -> None:
    for path in sorted(Path(CATALOGUE).glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["metadata"]["name"] == path.stem
