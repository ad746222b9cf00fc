"""Each SaaS entry of the catalogue against a local server that answers as its vendor documents.

The vendor's side comes from tests/support/vendors/<entry>.yaml, written from the
vendor's pages (each file names them and the date they were checked): the hosts, the
verification request, where the credential goes, the token endpoint, and the documented
answers, each with the reason a user should see. The connector is read from
deploy/connectors/, the Connection's config and credentials go through the operator's own
resolution functions, and the driver runs under the shared verification runner with an
egress policy that allows loopback only. Every URL variable is pointed at the local
server, keeping its path, so nothing here reaches a vendor; the hosts the entry's
defaults name are compared with the documented hosts instead.

The contracts can fail: for each entry, the verification path, the default hosts,
where the credential goes, the signed client assertion and whether the request is first
sent without credentials are altered in turn, and each alteration must fail its
contract.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from patchbay.api import ClusterConnector
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core.config import ConfigValue, resolve_config
from patchbay.core.credentials import credential_sources, resolve_credentials
from patchbay.core.egress import EgressPolicy, host_matches, parse_networks
from patchbay.core.schedule import parse_duration
from patchbay.core.tokens import build_token_state, standing_values
from patchbay.core.verification import build_verify_request, run_verification
from patchbay.drivers import available_drivers
from patchbay.drivers.base import VerifyOutcome
from saas_contracts import GRANTED, Case, VendorFacts, VendorServer, cases, load_facts, serve_vendor
from tests.conftest import REPO_ROOT

CATALOGUE = REPO_ROOT / "deploy" / "connectors"
CONNECTORS_DOC = REPO_ROOT / "docs" / "connectors.md"
# SaaS entries are http-driver entries other than the generic one.
GENERIC_HTTP_ENTRY = "http-api"
LOOPBACK_ONLY = EgressPolicy(allowed=parse_networks(["127.0.0.0/8", "::1/128"]))
SECRET_NAME = "vendor-credentials"
# Where a verification's requests go: the base URL, and the token endpoint.
BASE_URL, TOKEN_ENDPOINT = "baseUrl", "token endpoint"

Document = dict[str, Any]
FACTS = load_facts()


def _document(name: str) -> Document:
    document: Document = yaml.safe_load((CATALOGUE / f"{name}.yaml").read_text())
    return document


def _spec(document: Document) -> ConnectorSpec:
    return ClusterConnector.model_validate(document).spec


def _connector(name: str) -> ConnectorSpec:
    return _spec(_document(name))


def _cases(name: str) -> list[Case]:
    spec = _connector(name)
    return cases(FACTS[name], [v.key for v in spec.variables if v.secret])


CASES = {name: _cases(name) for name in FACTS}


# ----- hosts ------------------------------------------------------------------------


def _url_variables(spec: ConnectorSpec) -> list[str]:
    return [v.key for v in spec.variables if v.type == "url"]


def _url_defaults(facts: VendorFacts, spec: ConnectorSpec) -> dict[str, str]:
    """The URL variables that have a default, as the defaults make them for the tenant."""
    without_default = {
        v.key: "https://placeholder.invalid"
        for v in spec.variables
        if v.type == "url" and v.default is None
    }
    values = resolve_config(spec, {**facts.tenant, **without_default}).values
    return {key: str(values[key]) for key in _url_variables(spec) if key not in without_default}


def _default_destinations(facts: VendorFacts, spec: ConnectorSpec) -> dict[str, str]:
    """The URLs a Connection that sets no URL reaches: its base URL and token endpoint."""
    defaults = _url_defaults(facts, spec)
    reached: dict[str, str] = {}
    if BASE_URL in defaults:
        reached[BASE_URL] = defaults[BASE_URL]
    if spec.auth.oauth2 is not None:
        template = spec.auth.oauth2.token_url
        if template.startswith("/"):
            reached[TOKEN_ENDPOINT] = defaults.get(BASE_URL, "").rstrip("/") + template
        else:
            reached[TOKEN_ENDPOINT] = re.sub(
                r"\{([A-Za-z0-9_]+)\}", lambda m: defaults.get(m[1], m[0]), template
            )
    return reached


def _host_mismatches(facts: VendorFacts, spec: ConnectorSpec) -> list[str]:
    """Where the entry's default URLs are not https on exactly the documented hosts."""
    documented = {
        BASE_URL: facts.api.host,
        TOKEN_ENDPOINT: facts.token.host if facts.token else None,
    }
    reached = _default_destinations(facts, spec)
    problems = []
    for what, host in documented.items():
        expected = facts.fill(host) if host is not None else None
        url = reached.get(what)
        parts = urlsplit(url) if url is not None else None
        if parts is None and expected is None:
            continue
        if parts is None or parts.scheme != "https" or parts.hostname != expected:
            where = f"https://{expected}" if expected else "absent: the vendor has no host"
            problems.append(f"the {what} default {url} should be {where}")
    if facts.api.host is None and [v.required for v in spec.variables if v.key == BASE_URL] != [
        True
    ]:
        problems.append("without a vendor host, a Connection must give its baseUrl")
    return problems


# ----- running a verification -------------------------------------------------------


def _connection(facts: VendorFacts, spec: ConnectorSpec, server: VendorServer) -> ConnectionSpec:
    """The tenant's Connection, with every URL moved to the local server, path kept."""
    defaults = _url_defaults(facts, spec)
    config: dict[str, ConfigValue] = dict(facts.tenant)
    for key in _url_variables(spec):
        path = urlsplit(defaults[key]).path.rstrip("/") if key in defaults else ""
        config[key] = server.origin + path
    return ConnectionSpec.model_validate(
        {
            "connectorRef": {"name": "vendor"},
            "config": config,
            "credentials": {"secretRef": {"name": SECRET_NAME}},
        }
    )


async def _verify(
    facts: VendorFacts,
    spec: ConnectorSpec,
    server: VendorServer,
    secret_values: Mapping[str, str],
    standing: Mapping[str, str] | None = None,
) -> tuple[VerifyOutcome, dict[str, str]]:
    """The outcome, and the values the token endpoint issued in place of given ones.

    ``standing``: values the operator kept from earlier verifications, which win over
    the Secret's as they do in the operator.
    """
    connection = _connection(facts, spec, server)
    config = resolve_config(spec, connection.config)
    for key in _url_variables(spec):
        host = urlsplit(str(config.values[key])).hostname
        assert host is not None and ipaddress.ip_address(host).is_loopback, key
    credentials = resolve_credentials(
        connection, config.secret_variables, {SECRET_NAME: secret_values}
    )
    credentials = replace(credentials, values={**credentials.values, **(standing or {})})
    timeout = parse_duration(spec.verification.timeout)
    request = build_verify_request(spec, connection, config, credentials, timeout)
    outcome, _ = await run_verification(
        available_drivers()[spec.driver], request, egress=LOOPBACK_ONLY, timeout_seconds=timeout
    )
    return outcome, request.issued


async def _case_problems(facts: VendorFacts, spec: ConnectorSpec, case: Case) -> list[str]:
    """How the entry's verification of the case differs from what the vendor calls for."""
    async with serve_vendor(facts, open_server=case.open_server) as server:
        outcome, issued = await _verify(facts, spec, server, case.secrets)
    problems = []
    if outcome.code != case.expect:
        problems.append(f"{case.name}: {outcome.code}, not {case.expect}: {outcome.message}")
    if server.seen != list(case.requests):
        problems.append(f"{case.name}: the vendor saw {server.seen}, not {list(case.requests)}")
    if case.retry_after is not None and outcome.retry_after != case.retry_after:
        problems.append(f"{case.name}: retry after {outcome.retry_after}, not {case.retry_after}")
    if any(value in outcome.message for value in case.secrets.values()):
        problems.append(f"{case.name}: a secret value is in the message")
    # a rotating token endpoint's new refresh token, whenever it answered the grant (the
    # API was called after it)
    rotated = facts.token is not None and facts.token.rotates_refresh_token
    answered = "POST token" in case.requests[:-1]
    expect_issued = {"refreshToken"} if rotated and answered else set()
    if set(issued) != expect_issued:
        problems.append(f"{case.name}: issued {sorted(issued)}, not {sorted(expect_issued)}")
    return problems


def _contract_failures(name: str, spec: ConnectorSpec) -> list[str]:
    """Everything in which the entry's spec breaks its vendor's contract."""
    facts = FACTS[name]

    async def run_cases() -> list[str]:
        problems: list[str] = []
        for case in CASES[name]:
            # a known gap fails already, whatever the spec
            if case.known_gap is None:
                problems += await _case_problems(facts, spec, case)
        return problems

    return _host_mismatches(facts, spec) + asyncio.run(run_cases())


# ----- the contracts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "case"),
    [
        pytest.param(
            name,
            case,
            id=f"{name}-{case.name}",
            marks=[pytest.mark.xfail(strict=True, reason=case.known_gap)] if case.known_gap else [],
        )
        for name, found in CASES.items()
        for case in found
    ],
)
def test_catalogue_entry_reports_what_its_vendor_answers(name: str, case: Case) -> None:
    assert asyncio.run(_case_problems(FACTS[name], _connector(name), case)) == []


def test_every_saas_entry_of_the_catalogue_has_vendor_facts() -> None:
    entries = {
        path.stem
        for path in CATALOGUE.glob("*.yaml")
        if path.stem != GENERIC_HTTP_ENTRY and _connector(path.stem).driver == "http"
    }
    assert entries == set(FACTS)


@pytest.mark.parametrize("name", FACTS)
def test_catalogue_urls_default_to_the_hosts_the_vendor_documents(name: str) -> None:
    assert _host_mismatches(FACTS[name], _connector(name)) == []


@pytest.mark.parametrize("name", FACTS)
def test_each_vendor_entry_lets_its_connections_reach_its_documented_hosts_only(
    name: str,
) -> None:
    facts, spec = FACTS[name], _connector(name)
    if facts.api.host is None:
        assert spec.egress is None  # self-hosted or per-partner hosts: docs/connectors.md
        return
    assert spec.egress is not None and spec.egress.hosts
    for host in facts.documented_hosts():
        assert any(host_matches(p, host) for p in spec.egress.hosts), host
        look_alikes = (
            f"{host}.attacker.test",
            host.rsplit(".", 1)[0] + ".attacker",
            "attacker.test",
        )
        for elsewhere in look_alikes:
            assert not any(host_matches(p, elsewhere) for p in spec.egress.hosts), elsewhere


def _as_stored(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret as the API server keeps it: stringData merged into data, base64-encoded."""
    written = secret.get("stringData") or {}
    data = {
        **secret.get("data", {}),
        **{k: base64.b64encode(v.encode()).decode() for k, v in written.items()},
    }
    return {**{k: v for k, v in secret.items() if k != "stringData"}, "data": data}


@pytest.mark.parametrize(
    "name",
    [name for name, facts in FACTS.items() if facts.token and facts.token.rotates_refresh_token],
)
def test_a_rotated_refresh_token_is_kept_and_used_by_the_next_verification(name: str) -> None:
    facts, spec = FACTS[name], _connector(name)
    (granted,) = [case for case in CASES[name] if case.name == GRANTED]

    async def three_verifications() -> tuple[list[Reason], VendorServer]:
        codes = []
        async with serve_vendor(facts) as server:
            connection = _connection(facts, spec, server)
            secret_variables = resolve_config(spec, connection.config).secret_variables
            # the user's Secret stays as it is: the same resourceVersion every time
            sources = {
                s.variable: f"{s.secret}/{s.key}@1"
                for s in credential_sources(connection, secret_variables)
            }
            state: dict[str, Any] | None = None
            for _ in range(3):
                standing = standing_values(state, sources)
                outcome, issued = await _verify(facts, spec, server, granted.secrets, standing)
                codes.append(outcome.code)
                if issued:  # kept in the token-state Secret, as the operator does
                    state = _as_stored(
                        build_token_state(
                            connection="vendor",
                            namespace="default",
                            uid="0d5a3f9e",
                            issued=issued,
                            sources=sources,
                        )
                    )
        return codes, server

    codes, server = asyncio.run(three_verifications())

    assert codes == [Reason.VERIFIED] * 3
    # each refresh token was used once: the user's, then each one issued in its place
    assert server.refresh_tokens_used == [
        granted.secrets["refreshToken"],
        *server.refresh_tokens_issued[:2],
    ]
    assert len(set(server.refresh_tokens_used)) == 3


# ----- the contracts can fail -------------------------------------------------------

# Each alters an entry's ClusterConnector document in place; False where it does not apply.
Mutation = Callable[[Document, VendorFacts], bool]


def _variable(spec: Document, key: str) -> Document | None:
    return next((v for v in spec["variables"] if v["key"] == key), None)


def _drop_last_path_segment(document: Document, facts: VendorFacts) -> bool:
    http = document["spec"]["verification"]["http"]
    path, sep, query = http["path"].partition("?")
    http["path"] = ("/".join(path.rstrip("/").split("/")[:-1]) or "/") + sep + query
    return True


def _drop_base_path(document: Document, facts: VendorFacts) -> bool:
    variable = _variable(document["spec"], BASE_URL)
    if variable is None or not urlsplit(str(variable.get("default") or "")).path.strip("/"):
        return False
    parts = urlsplit(variable["default"])
    variable["default"] = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return True


def _nearby_host(netloc: str) -> str:
    """Another plausible host of the vendor: the parent domain, or an api. subdomain."""
    labels = netloc.split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else f"api.{netloc}"


def _move_default_host(key: str) -> Mutation:
    def move(document: Document, facts: VendorFacts) -> bool:
        variable = _variable(document["spec"], key)
        if variable is None:
            return False
        if variable.get("default") is None:
            if key != BASE_URL:
                return False
            # a vendor host for an entry whose hosts are the customer's own
            variable["default"] = f"https://api.{document['metadata']['name']}.com"
            return True
        # netloc, not hostname, which would lower-case the {placeholders}
        parts = urlsplit(variable["default"])
        variable["default"] = urlunsplit(parts._replace(netloc=_nearby_host(parts.netloc)))
        return True

    return move


def _placement(auth: Document) -> Document | None:
    """Where the credential goes, as {in, name, prefix}: an API key, a bearer token or an
    OAuth 2.0 access token; None for basic auth."""
    bearer_header = {"in": "header", "name": "Authorization", "prefix": "Bearer "}
    if auth["type"] == "apiKey":
        return dict(auth["apiKey"])
    if auth["type"] == "bearer":
        bearer = auth.get("bearer") or {}
        return {
            "in": "header",
            "name": bearer.get("header", "Authorization"),
            "prefix": bearer.get("prefix", "Bearer "),
        }
    if auth["type"] in ("oauth2RefreshToken", "oauth2ClientCredentials"):
        return dict(auth["oauth2"].get("accessToken") or bearer_header)
    return None


def _place(auth: Document, placement: Document) -> bool:
    if placement["in"] == "query":
        placement.pop("prefix", None)
    if auth["type"] == "apiKey":
        auth["apiKey"] = placement
    elif auth["type"] == "bearer":
        if placement["in"] != "header":
            return False  # a bearer token goes in a header
        auth["bearer"] = {"header": placement["name"], "prefix": placement.get("prefix") or ""}
    else:
        auth["oauth2"]["accessToken"] = placement
    return True


def _rename(document: Document, facts: VendorFacts) -> bool:
    auth = document["spec"]["auth"]
    placement = _placement(auth)
    if placement is None:
        return False
    if placement["in"] == "query":
        placement["name"] = "token" if placement["name"] != "token" else "access_token"
    else:
        placement["name"] = (
            "X-Auth-Token" if placement["name"].lower() == "x-api-key" else "X-Api-Key"
        )
    return _place(auth, placement)


def _change_prefix(document: Document, facts: VendorFacts) -> bool:
    auth = document["spec"]["auth"]
    placement = _placement(auth)
    if placement is None or placement["in"] != "header":
        return False
    placement["prefix"] = "Token " if placement.get("prefix") == "Bearer " else "Bearer "
    return _place(auth, placement)


def _swap_query_and_header(document: Document, facts: VendorFacts) -> bool:
    auth = document["spec"]["auth"]
    placement = _placement(auth)
    if placement is None:
        return False
    if placement["in"] == "header":
        return _place(auth, {"in": "query", "name": "access_token"})
    return _place(auth, {"in": "header", "name": "Authorization", "prefix": "Bearer "})


def _swap_client_auth(document: Document, facts: VendorFacts) -> bool:
    oauth2 = document["spec"]["auth"].get("oauth2")
    if oauth2 is None or facts.token is None or len(facts.token.client_auth) != 1:
        return False  # a token endpoint that takes either method accepts the swap
    current = oauth2.get("clientAuth", "body")
    if current == "privateKeyJwt":
        del oauth2["clientAssertion"]
    oauth2["clientAuth"] = "basic" if current == "body" else "body"
    return True


def _fix_scopes(document: Document, facts: VendorFacts) -> bool:
    """Scopes that follow a variable (Graph's national clouds) fixed at its default."""
    spec = document["spec"]
    scopes = (spec["auth"].get("oauth2") or {}).get("scopes", [])
    defaults = {v["key"]: str(v.get("default")) for v in spec["variables"]}
    fixed = [re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: defaults[m[1]], scope) for scope in scopes]
    if fixed == scopes:
        return False
    spec["auth"]["oauth2"]["scopes"] = fixed
    return True


def _alter_assertion(alter: Callable[[Document], None]) -> Mutation:
    def mutate(document: Document, facts: VendorFacts) -> bool:
        oauth2 = document["spec"]["auth"].get("oauth2") or {}
        if "clientAssertion" not in oauth2:
            return False
        alter(oauth2["clientAssertion"])
        return True

    return mutate


def _other_algorithm(assertion: Document) -> None:
    # RS256 (RSA PKCS#1 v1.5) is the one a vendor is likeliest to refuse
    assertion["algorithm"] = "PS256" if assertion.get("algorithm") == "RS256" else "RS256"


def _other_key_id(assertion: Document) -> None:
    assertion["keyId"] = "another-certificate"


def _toggle_scope_claim(assertion: Document) -> None:
    assertion["scopeClaim"] = not assertion.get("scopeClaim", False)


def _toggle_credentials_required(document: Document, facts: VendorFacts) -> bool:
    http = document["spec"]["verification"]["http"]
    http["credentialsRequired"] = not http.get("credentialsRequired", False)
    return True


MUTATIONS: dict[str, Mutation] = {
    "path": _drop_last_path_segment,
    "base path": _drop_base_path,
    "host": _move_default_host(BASE_URL),
    "token host": _move_default_host("tokenUrl"),
    "name": _rename,
    "prefix": _change_prefix,
    "query vs header": _swap_query_and_header,
    "client auth": _swap_client_auth,
    "fixed scope": _fix_scopes,
    "assertion algorithm": _alter_assertion(_other_algorithm),
    "assertion key id": _alter_assertion(_other_key_id),
    "assertion scope claim": _alter_assertion(_toggle_scope_claim),
    # an entry probes without credentials where, and only where, the vendor needs it
    "credentials required": _toggle_credentials_required,
}
AUTH_PLACEMENT = ("name", "prefix", "query vs header", "client auth")


def _mutated(name: str, mutation: str) -> ConnectorSpec | None:
    document = copy.deepcopy(_document(name))
    if not MUTATIONS[mutation](document, FACTS[name]):
        return None
    return _spec(document)


APPLICABLE = {name: [m for m in MUTATIONS if _mutated(name, m) is not None] for name in FACTS}


@functools.cache
def _unmutated_failures(name: str) -> list[str]:
    return _contract_failures(name, _connector(name))


def test_every_entry_is_altered_in_its_path_host_and_auth_placement() -> None:
    for name, applicable in APPLICABLE.items():
        assert {"path", "host"} <= set(applicable), name
        if _connector(name).auth.type != "basic":
            assert set(AUTH_PLACEMENT) & set(applicable), name


@pytest.mark.parametrize(
    ("name", "mutation"),
    [(name, mutation) for name, applicable in APPLICABLE.items() for mutation in applicable],
    ids=lambda value: str(value).replace(" ", "-"),
)
def test_an_altered_path_host_or_auth_placement_fails_the_entrys_contract(
    name: str, mutation: str
) -> None:
    # the entry as it is keeps its contract, so a failure comes from the alteration
    assert _unmutated_failures(name) == []
    mutated = _mutated(name, mutation)
    assert mutated is not None
    assert _contract_failures(name, mutated) != []


# ----- the facts are documented -----------------------------------------------------


def _doc_section(name: str) -> str:
    sections = re.split(r"^## ", CONNECTORS_DOC.read_text(), flags=re.MULTILINE)
    (section,) = [s for s in sections if s.split("\n", 1)[0].strip() == name]
    return section


@pytest.mark.parametrize("name", FACTS)
def test_the_catalogue_docs_name_each_entrys_sources_and_date_checked(name: str) -> None:
    section = _doc_section(name)
    assert f"**Checked:** {FACTS[name].checked.isoformat()}" in section
    for url in FACTS[name].sources:
        assert url in section, url


def test_catalogue_yaml_files_are_named_after_their_entry() -> None:
    for path in sorted(Path(CATALOGUE).glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["metadata"]["name"] == path.stem
