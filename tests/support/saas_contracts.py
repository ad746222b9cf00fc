"""Local stand-ins for the SaaS APIs of the connector catalogue, read from vendor facts.

What each vendor documents lives in ``vendors/<entry>.yaml`` next to this module, one
file per catalogue entry: the pages it was taken from and the date they were checked,
the hosts, the verification request and where the credential goes, the token endpoint,
and the answers the vendor gives to bad credentials, missing permissions and throttling
(status, body, headers), each with the reason a user should see, decided from the
vendor's documentation. Those files are written from the vendors' pages, never from
deploy/connectors/.

This module only reads them (``load_facts``), derives the credentials each case uses and
the reason it must end with (``cases``), and runs the vendor as a real aiohttp server on
127.0.0.1 (``serve_vendor``) that answers the documented paths only (404 elsewhere),
reads the credential only where the vendor documents it, and gives the documented
answers.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from patchbay.api.reasons import Reason

VENDORS = Path(__file__).parent / "vendors"
LOOPBACK = "127.0.0.1"
# The secret the token endpoint knows for every client of a contract.
CLIENT_SECRET = "client-secret-1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Facts(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Reply(_Facts):
    """An answer: status, a JSON body (a string is sent as text/plain) and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)

    def response(self) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict(self.headers)
        if self.body is None:
            return web.Response(status=self.status, headers=headers)
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return web.Response(status=self.status, body=self.body.encode(), headers=headers)
        headers.setdefault("Content-Type", "application/json")
        return web.Response(status=self.status, body=json.dumps(self.body), headers=headers)


class ErrorAnswer(Reply):
    """A documented error answer and the reason a user should see for it."""

    reason: Reason
    # the vendor's page that documents it (one of the file's sources)
    source: str | None = None
    # what no vendor page documents, and where that part comes from instead
    assumed: str | None = None
    # set when the entry does not give the reason the vendor's documentation calls for
    known_gap: str | None = None

    @model_validator(mode="after")
    def _has_provenance(self) -> ErrorAnswer:
        if self.source is None and self.assumed is None:
            raise ValueError("an answer needs its source, or what about it is assumed")
        return self


class Credential(_Facts):
    """Where the API reads the credential: a header (after a prefix), a query parameter,
    or HTTP basic auth."""

    in_: Literal["header", "query", "basic"] = Field(alias="in")
    name: str = "Authorization"
    prefix: str = ""

    def read(self, request: web.Request) -> str | None:
        if self.in_ == "query":
            return request.query.get(self.name)
        if self.in_ == "basic":
            pair = basic_pair(request.headers.get("Authorization"))
            return f"{pair[0]}:{pair[1]}" if pair else None
        value = request.headers.get(self.name)
        if value is None or not value.startswith(self.prefix):
            return None
        return value[len(self.prefix) :]


class Api(_Facts):
    """The API the entry verifies with."""

    # The default host, with {tenant} placeholders; None when there is no vendor host
    # (self-hosted, or a host per customer).
    host: str | None
    # Other hosts the vendor documents for the same API: regions, sandboxes, clouds.
    other_hosts: list[str] = Field(default_factory=list)
    method: str
    # The full path, with {tenant} placeholders and aiohttp {name:regex} variables.
    path: str
    # Required query parameters and headers: name -> regular expression of the value.
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    # The request body must be empty or JSON (a form content type is refused).
    json_body_only: bool = False
    credential: Credential
    granted: Reply
    # A required query parameter or header missing, or a refused content type.
    bad_request: Reply = Reply(status=400, body={"error": "bad request"})
    # A missing or unknown credential.
    unauthenticated: ErrorAnswer
    # Each answer is given to a credential of its own: one case each.
    answers: dict[str, ErrorAnswer] = Field(default_factory=dict)


class TokenEndpoint(_Facts):
    """An OAuth 2.0 token endpoint (RFC 6749 section 3.2) as the vendor runs it."""

    host: str
    path: str
    grant: Literal["refresh_token", "client_credentials"]
    # The client authentication methods it accepts (RFC 6749 section 2.3.1).
    client_auth: list[Literal["body", "basic"]] = Field(min_length=1)
    scope: str | None = None
    # Each refresh answers with a new refresh token and spends the one used.
    rotates_refresh_token: bool = False
    # The fields of a successful answer besides access_token (and a rotated refresh_token).
    granted: dict[str, Any]
    wrong_client_secret: ErrorAnswer
    # An unknown client id, where the vendor answers it apart from a wrong secret.
    unknown_client: ErrorAnswer | None = None
    # A refresh token that is expired, revoked or spent.
    revoked_refresh_token: ErrorAnswer | None = None
    # A request without the required scope.
    invalid_scope: Reply = Reply(status=400, body={"error": "invalid_scope"})

    @model_validator(mode="after")
    def _refresh_grant_rejects_tokens(self) -> TokenEndpoint:
        if (self.grant == "refresh_token") != (self.revoked_refresh_token is not None):
            raise ValueError("revokedRefreshToken belongs to, and only to, the refresh grant")
        return self


class VendorFacts(_Facts):
    """What a vendor documents about the API of one catalogue entry."""

    checked: datetime.date
    sources: list[str] = Field(min_length=1)
    # Config a Connection of this vendor gives: the tenant the hosts are resolved for.
    tenant: dict[str, str] = Field(default_factory=dict)
    api: Api
    token: TokenEndpoint | None = None

    @model_validator(mode="after")
    def _answers_cite_the_sources(self) -> VendorFacts:
        if any(not url.startswith("https://") for url in self.sources):
            raise ValueError("sources are https URLs of the vendor's documentation")
        for answer in self.error_answers():
            if answer.source is not None and answer.source not in self.sources:
                raise ValueError(f"{answer.source} is not among the sources")
        return self

    def error_answers(self) -> list[ErrorAnswer]:
        answers = [self.api.unauthenticated, *self.api.answers.values()]
        if self.token is not None:
            answers += [
                a
                for a in (
                    self.token.wrong_client_secret,
                    self.token.unknown_client,
                    self.token.revoked_refresh_token,
                )
                if a is not None
            ]
        return answers

    def fill(self, template: str) -> str:
        """A host or path with the tenant's {placeholders} filled; aiohttp's
        {name:regex} variables stay."""
        return re.sub(
            r"\{([A-Za-z0-9_]+)\}",
            lambda m: quote(self.tenant[m[1]], safe="") if m[1] in self.tenant else m[0],
            template,
        )

    def documented_hosts(self) -> list[str]:
        """Every host the vendor documents for this API, resolved for the tenant."""
        hosts = [self.api.host] if self.api.host else []
        hosts += self.api.other_hosts
        if self.token is not None:
            hosts.append(self.token.host)
        return [self.fill(host) for host in hosts]


def load_facts() -> dict[str, VendorFacts]:
    """The vendor facts of every entry, by entry name."""
    return {
        path.stem: VendorFacts.model_validate(yaml.safe_load(path.read_text()))
        for path in sorted(VENDORS.glob("*.yaml"))
    }


def basic_pair(header: str | None) -> tuple[str, str] | None:
    """The user and password of an HTTP basic Authorization header."""
    if header is None or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


# ----- the cases a vendor's facts call for -----------------------------------------

GRANTED = "granted"
# the account whose access tokens the API refuses although the token endpoint issued them
REFUSED = "refused"


@dataclass(frozen=True)
class Case:
    """Secret values a Connection holds, and what its verification must come to."""

    name: str
    secrets: Mapping[str, str]
    expect: Reason
    # The requests the vendor sees, as "METHOD api" or "METHOD token".
    requests: tuple[str, ...]
    # The Retry-After the vendor sends with a throttling answer, in seconds.
    retry_after: float | None = None
    # The entry does not yet give the reason the vendor's documentation calls for.
    known_gap: str | None = None


@dataclass(frozen=True)
class Accounts:
    """The credentials the vendor knows, and the answer each gets."""

    # static credential ('user:password' for basic auth), refresh token or client id
    # -> the name of its answer
    access: dict[str, str]
    # OAuth 2.0 client id -> secret
    clients: dict[str, str]


def cases(facts: VendorFacts, secret_keys: list[str]) -> list[Case]:
    """One case per documented answer: the Secret that gets it and what is expected.

    ``secret_keys`` are the entry's secret variables; a static credential (an API key,
    a bearer token) is the one of them, or ``password`` for basic auth, whose user name
    is tenant config.
    """
    api = facts.api
    api_request = f"{api.method} api"
    answers: dict[str, ErrorAnswer | None] = {GRANTED: None, **api.answers}
    token = facts.token
    if token is None:
        (key,) = ["password"] if api.credential.in_ == "basic" else secret_keys
        answers["unknown-credential"] = api.unauthenticated
        return [
            _expecting(name, {key: f"cred-{name}"}, answer, (api_request,))
            for name, answer in answers.items()
        ]
    through_token = ("POST token", api_request)
    found = [
        _expecting(name, _oauth_secrets(token, name), answer, through_token)
        for name, answer in answers.items()
    ]
    found.append(
        _expecting(
            "access-token-refused",
            _oauth_secrets(token, REFUSED),
            api.unauthenticated,
            through_token,
        )
    )
    granted = _oauth_secrets(token, GRANTED)
    refusals: dict[str, tuple[dict[str, str], ErrorAnswer]] = {
        "wrong-client-secret": ({"clientSecret": "not-the-secret"}, token.wrong_client_secret),
        "unknown-client": (
            {"clientId": "no-such-client"},
            token.unknown_client or token.wrong_client_secret,
        ),
    }
    if token.revoked_refresh_token is not None:
        refusals["revoked-refresh-token"] = (
            {"refreshToken": "rt-revoked"},
            token.revoked_refresh_token,
        )
    return found + [
        _expecting(name, {**granted, **changed}, answer, ("POST token",))
        for name, (changed, answer) in refusals.items()
    ]


def accounts(facts: VendorFacts) -> Accounts:
    """The accounts behind ``cases``: what each credential gets from the vendor."""
    names = [GRANTED, *facts.api.answers]
    token = facts.token
    if token is None:
        user = f"{facts.tenant['username']}:" if facts.api.credential.in_ == "basic" else ""
        return Accounts({f"{user}cred-{name}": name for name in names}, {})
    names.append(REFUSED)
    if token.grant == "refresh_token":
        return Accounts({f"rt-{name}": name for name in names}, {"client-1": CLIENT_SECRET})
    return Accounts(
        {f"client-{name}": name for name in names},
        {f"client-{name}": CLIENT_SECRET for name in names},
    )


def _expecting(
    name: str,
    secret_values: Mapping[str, str],
    answer: ErrorAnswer | None,
    requests: tuple[str, ...],
) -> Case:
    """The case of a credential that gets ``answer``, or the granted answer (None)."""
    if answer is None:
        return Case(name, secret_values, Reason.VERIFIED, requests)
    retry_after = CIMultiDict(answer.headers).get("Retry-After")
    return Case(
        name,
        secret_values,
        answer.reason,
        requests,
        retry_after=(
            float(retry_after)
            if retry_after is not None and answer.reason == Reason.RATE_LIMITED
            else None
        ),
        known_gap=answer.known_gap,
    )


def _oauth_secrets(token: TokenEndpoint, account: str) -> dict[str, str]:
    """A refresh grant's client and the account's refresh token, or the account's client."""
    if token.grant == "refresh_token":
        return {
            "clientId": "client-1",
            "clientSecret": CLIENT_SECRET,
            "refreshToken": f"rt-{account}",
        }
    return {"clientId": f"client-{account}", "clientSecret": CLIENT_SECRET}


# ----- the server ------------------------------------------------------------------


@dataclass
class VendorServer:
    """A running stand-in; ``origin`` is its http://127.0.0.1:port."""

    facts: VendorFacts
    known: Accounts
    origin: str = ""
    # access token -> answer name
    access_tokens: dict[str, str] = field(default_factory=dict)
    # every request, as "METHOD api", "METHOD token", or "METHOD /path" where nothing is
    seen: list[str] = field(default_factory=list)
    # refresh tokens presented to the token endpoint, and those it issued in their place
    refresh_tokens_used: list[str] = field(default_factory=list)
    refresh_tokens_issued: list[str] = field(default_factory=list)

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        matched = request.match_info.http_exception is None and route.name
        self.seen.append(f"{request.method} {route.name if matched else request.path}")
        return await handler(request)

    async def resource(self, request: web.Request) -> web.StreamResponse:
        api = self.facts.api
        if request.method != api.method:
            return web.json_response({"error": "method not allowed"}, status=405)
        if not _all_match(api.query, request.query) or not _all_match(api.headers, request.headers):
            return api.bad_request.response()
        content_type = request.headers.get("Content-Type")
        if api.json_body_only and content_type and not content_type.startswith("application/json"):
            return api.bad_request.response()
        presented = api.credential.read(request)
        if self.facts.token is not None:
            name = self.access_tokens.get(presented or "")
        else:
            name = self.known.access.get(presented or "")
        if name is None or name not in (GRANTED, *api.answers):
            return api.unauthenticated.response()
        return (api.granted if name == GRANTED else api.answers[name]).response()

    async def token(self, request: web.Request) -> web.StreamResponse:
        endpoint = self.facts.token
        assert endpoint is not None
        if request.method != "POST":
            return web.json_response({"error": "invalid_request"}, status=405)
        params = {k: str(v) for k, v in (await request.post()).items()}
        client = self._client(request, params, endpoint)
        if client is None:
            return endpoint.wrong_client_secret.response()
        if client not in self.known.clients:
            return (endpoint.unknown_client or endpoint.wrong_client_secret).response()
        if params.get("grant_type") != endpoint.grant:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if endpoint.scope is not None and endpoint.scope not in params.get("scope", "").split():
            return endpoint.invalid_scope.response()
        answer: dict[str, Any] = dict(endpoint.granted)
        if endpoint.grant == "refresh_token":
            refresh = params.get("refresh_token", "")
            self.refresh_tokens_used.append(refresh)
            name = self.known.access.get(refresh)
            if name is None:
                assert endpoint.revoked_refresh_token is not None
                return endpoint.revoked_refresh_token.response()
            if endpoint.rotates_refresh_token:
                del self.known.access[refresh]
                rotated = f"rt-{secrets.token_hex(8)}"
                self.known.access[rotated] = name
                self.refresh_tokens_issued.append(rotated)
                answer["refresh_token"] = rotated
        else:
            name = self.known.access[client]
        access_token = f"at-{secrets.token_hex(12)}"
        self.access_tokens[access_token] = name
        return web.json_response({"access_token": access_token, **answer})

    def _client(
        self, request: web.Request, params: Mapping[str, str], endpoint: TokenEndpoint
    ) -> str | None:
        """The client id, or None when it is not authenticated in a way the endpoint
        accepts, or its secret does not match."""
        pair = basic_pair(request.headers.get("Authorization"))
        if pair is not None and "basic" in endpoint.client_auth:
            client_id, client_secret = pair
        elif pair is None and "client_id" in params and "body" in endpoint.client_auth:
            client_id, client_secret = params["client_id"], params.get("client_secret", "")
        else:
            return None
        known = self.known.clients.get(client_id)
        if known is None:
            return client_id
        return client_id if secrets.compare_digest(known, client_secret) else None


def _all_match(required: Mapping[str, str], given: Mapping[str, str]) -> bool:
    return all(re.fullmatch(pattern, given.get(name, "")) for name, pattern in required.items())


@asynccontextmanager
async def serve_vendor(facts: VendorFacts) -> AsyncIterator[VendorServer]:
    """The vendor's documented endpoints on a free port of 127.0.0.1; 404 elsewhere."""
    server = VendorServer(facts, accounts(facts))
    app = web.Application(middlewares=[server.record])
    app.router.add_route("*", facts.fill(facts.api.path), server.resource, name="api")
    if facts.token is not None:
        app.router.add_route("*", facts.fill(facts.token.path), server.token, name="token")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    server.origin = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
