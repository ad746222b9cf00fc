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
answers. A token endpoint that takes signed client assertions (RFC 7523) checks them
with the public half of a test key generated once per process, as the vendor would with
the certificate the client registered.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from http_server import AssertionVerifier, serve_app
from patchbay.api.reasons import Reason

VENDORS = Path(__file__).parent / "vendors"
LOOPBACK = "127.0.0.1"
# The secret the token endpoint knows for every client of a contract.
CLIENT_SECRET = "client-secret-1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Facts(BaseModel):
    """Vendor facts as the fixture files spell them (camelCase), checked strictly."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Reply(Facts):
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


class Documented(Facts):
    """Where a fact comes from."""

    # the vendor's page that documents it (one of the file's sources)
    source: str | None = None
    # what no vendor page documents, and where that part comes from instead
    assumed: str | None = None

    @model_validator(mode="after")
    def _has_provenance(self) -> Self:
        if self.source is None and self.assumed is None:
            raise ValueError("a fact needs its source, or what about it is assumed")
        return self


class ErrorAnswer(Reply, Documented):
    """A documented error answer and the reason a user should see for it."""

    reason: Reason
    # set when the entry does not give the reason the vendor's documentation calls for
    known_gap: str | None = None


class Credential(Facts):
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


class Api(Facts):
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
    # The server may run without authentication, answering every request with or without
    # credentials (a self-hosted product whose authentication is optional): a verification
    # must then prove that the server refused the request without them.
    authentication_optional: Documented | None = None


SignatureAlgorithm = Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "RS256"]


class ClientAssertion(Documented):
    """What a token endpoint checks in a client's signed JWT (RFC 7523 section 2.2), beyond
    the signature with the registered key, iss (the client id), aud (the token URL as
    requested), an unexpired exp and a jti never seen before."""

    # The accepted signature algorithms; the key the tests register suits the first.
    algorithms: list[SignatureAlgorithm] = Field(min_length=1)
    # The kid header: the id the vendor gave the registered key, with {tenant} placeholders.
    key_id: str
    # The longest exp - iat the endpoint accepts.
    max_lifetime_minutes: int = Field(gt=0, le=60)
    # The scopes travel in the assertion's scope claim, comma-separated, not in the form.
    scope_claim: bool = False


class TokenEndpoint(Facts):
    """An OAuth 2.0 token endpoint (RFC 6749 section 3.2) as the vendor runs it."""

    host: str
    path: str
    grant: Literal["refresh_token", "client_credentials"]
    # The client authentication methods it accepts: a secret in the form or as HTTP basic
    # auth (RFC 6749 section 2.3.1), or a signed assertion (RFC 7523 section 2.2).
    client_auth: list[Literal["body", "basic", "privateKeyJwt"]] = Field(min_length=1)
    # With privateKeyJwt: what the assertion must say.
    assertion: ClientAssertion | None = None
    # A scope the request must include; {apiOrigin} stands for the origin of the API as
    # the client reaches it (Microsoft Graph wants its national cloud's own).
    scope: str | None = None
    # Each refresh answers with a new refresh token and spends the one used.
    rotates_refresh_token: bool = False
    # The fields of a successful answer besides access_token (and a rotated refresh_token).
    granted: dict[str, Any]
    # A known client id with the wrong secret (body or basic client authentication).
    wrong_client_secret: ErrorAnswer | None = None
    # A known client id whose assertion is signed with a key the vendor does not know.
    unknown_key: ErrorAnswer | None = None
    # An unknown client id, where the vendor answers it apart from bad client credentials.
    unknown_client: ErrorAnswer | None = None
    # A refresh token that is expired, revoked or spent.
    revoked_refresh_token: ErrorAnswer | None = None
    # A request without the required scope.
    invalid_scope: Reply = Reply(status=400, body={"error": "invalid_scope"})

    @model_validator(mode="after")
    def _answers_fit_the_methods(self) -> TokenEndpoint:
        if (self.grant == "refresh_token") != (self.revoked_refresh_token is not None):
            raise ValueError("revokedRefreshToken belongs to, and only to, the refresh grant")
        by_secret = bool({"body", "basic"} & set(self.client_auth))
        if by_secret != (self.wrong_client_secret is not None):
            raise ValueError("wrongClientSecret belongs to, and only to, secret client auth")
        by_key = "privateKeyJwt" in self.client_auth
        if not by_key == (self.assertion is not None) == (self.unknown_key is not None):
            raise ValueError("assertion and unknownKey belong to, and only to, privateKeyJwt")
        return self

    def refused_client(self, by_key: bool) -> ErrorAnswer:
        """The answer to a known client that fails to authenticate: by a key the vendor
        does not know, or by a wrong secret (either, where the vendor takes only one)."""
        answer = self.unknown_key if by_key else self.wrong_client_secret
        found = answer or self.wrong_client_secret or self.unknown_key
        assert found is not None  # the validator wants one of them
        return found


class VendorFacts(Facts):
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
        for fact in self.documented():
            if fact.source is not None and fact.source not in self.sources:
                raise ValueError(f"{fact.source} is not among the sources")
        return self

    def error_answers(self) -> list[ErrorAnswer]:
        answers = [self.api.unauthenticated, *self.api.answers.values()]
        if self.token is not None:
            answers += [
                a
                for a in (
                    self.token.wrong_client_secret,
                    self.token.unknown_key,
                    self.token.unknown_client,
                    self.token.revoked_refresh_token,
                )
                if a is not None
            ]
        return answers

    def documented(self) -> list[Documented]:
        """Every fact that names its source: the error answers, and the rest."""
        others = [
            self.api.authentication_optional,
            self.token.assertion if self.token is not None else None,
        ]
        return [*self.error_answers(), *(fact for fact in others if fact is not None)]

    def fill(self, template: str) -> str:
        """A host, path or key id with the tenant's {placeholders} filled as a server sees
        them, decoded (a Graph site id keeps its commas); aiohttp's {name:regex} variables
        stay."""
        return re.sub(
            r"\{([A-Za-z0-9_]+)\}",
            lambda m: self.tenant.get(m[1], m[0]),
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
# the token endpoint registered the public half of REGISTERED_KEY for every client
REGISTERED_KEY, UNKNOWN_KEY = "registered", "unknown"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


@functools.cache
def signing_key(name: str, algorithm: SignatureAlgorithm) -> PrivateKey:
    """A key of the kind the algorithm signs with, made once per process and name: RSA
    2048 for PS* and RS256, EC on the algorithm's curve for ES*."""
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm]())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


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
    # The server runs without authentication and answers everyone.
    open_server: bool = False


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
    is tenant config. An OAuth 2.0 client authenticates with a private key where the
    entry reads one, with a client secret otherwise. Where the server's authentication
    is optional, every verification first sends its request without credentials, and a
    server that answers it is the case of its own that needs no credentials.
    """
    found = _oauth_cases(facts, secret_keys) if facts.token else _static_cases(facts, secret_keys)
    api_request = f"{facts.api.method} api"
    if facts.api.authentication_optional is None:
        return found
    (granted,) = [case for case in found if case.name == GRANTED]
    probed = [replace(case, requests=(api_request, *case.requests)) for case in found]
    return [
        *probed,
        replace(
            granted,
            name="authentication-off",
            expect=Reason.CREDENTIALS_NOT_REQUIRED,
            requests=(api_request, *granted.requests),
            open_server=True,
        ),
    ]


def _static_cases(facts: VendorFacts, secret_keys: list[str]) -> list[Case]:
    api = facts.api
    (key,) = ["password"] if api.credential.in_ == "basic" else secret_keys
    answers: dict[str, ErrorAnswer | None] = {GRANTED: None, **api.answers}
    answers["unknown-credential"] = api.unauthenticated
    return [
        _expecting(name, {key: f"cred-{name}"}, answer, (f"{api.method} api",))
        for name, answer in answers.items()
    ]


def _oauth_cases(facts: VendorFacts, secret_keys: list[str]) -> list[Case]:
    api, token = facts.api, facts.token
    assert token is not None
    by_key = "privateKey" in secret_keys
    through_token = ("POST token", f"{api.method} api")
    answers: dict[str, ErrorAnswer | None] = {GRANTED: None, **api.answers}
    found = [
        _expecting(name, _oauth_secrets(token, name, by_key), answer, through_token)
        for name, answer in answers.items()
    ]
    found.append(
        _expecting(
            "access-token-refused",
            _oauth_secrets(token, REFUSED, by_key),
            api.unauthenticated,
            through_token,
        )
    )
    granted = _oauth_secrets(token, GRANTED, by_key)
    refused_client = token.refused_client(by_key)
    refusals: dict[str, tuple[dict[str, str], ErrorAnswer]] = {
        "unknown-client": ({"clientId": "no-such-client"}, token.unknown_client or refused_client)
    }
    if by_key:
        refusals["unknown-key"] = ({"privateKey": _client_key(token, UNKNOWN_KEY)}, refused_client)
    else:
        refusals["wrong-client-secret"] = ({"clientSecret": "not-the-secret"}, refused_client)
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


def _oauth_secrets(token: TokenEndpoint, account: str, by_key: bool) -> dict[str, str]:
    """A refresh grant's client and the account's refresh token, or the account's client;
    the client authenticates with the registered private key or with its secret."""
    proof = (
        {"privateKey": _client_key(token, REGISTERED_KEY)}
        if by_key
        else {"clientSecret": CLIENT_SECRET}
    )
    if token.grant == "refresh_token":
        return {"clientId": "client-1", **proof, "refreshToken": f"rt-{account}"}
    return {"clientId": f"client-{account}", **proof}


def _key_algorithm(token: TokenEndpoint) -> SignatureAlgorithm:
    """The algorithm the registered key is made for: the vendor's first."""
    return token.assertion.algorithms[0] if token.assertion is not None else "PS256"


def _client_key(token: TokenEndpoint, name: str) -> str:
    return _pem(signing_key(name, _key_algorithm(token)))


# ----- the server ------------------------------------------------------------------


@dataclass
class VendorServer:
    """A running stand-in; ``origin`` is its http://127.0.0.1:port."""

    facts: VendorFacts
    known: Accounts
    # Answers every request, with or without credentials: authentication is off.
    open_server: bool = False
    # Checks client assertions against the registered key.
    assertions: AssertionVerifier | None = None
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
        if self.open_server:
            return api.granted.response()
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
        by_key = "client_assertion" in params
        if by_key:
            client, scopes = self._asserted_client(request, params, endpoint)
        else:
            client, scopes = (
                self._client(request, params, endpoint),
                params.get("scope", "").split(),
            )
        if client is None:
            return endpoint.refused_client(by_key).response()
        if client not in self.known.clients:
            return (endpoint.unknown_client or endpoint.refused_client(by_key)).response()
        if params.get("grant_type") != endpoint.grant:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        required = endpoint.scope.replace("{apiOrigin}", self.origin) if endpoint.scope else None
        if required is not None and required not in scopes:
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

    def _asserted_client(
        self, request: web.Request, params: Mapping[str, str], endpoint: TokenEndpoint
    ) -> tuple[str | None, list[str]]:
        """The client a signed assertion speaks for, or None when the endpoint takes no
        assertions or this one fails a check, and the scopes asked for (from the scope
        claim where the vendor reads them there). A client the vendor does not know is
        named all the same: there is no key to check its assertion with."""
        facts, verifier = endpoint.assertion, self.assertions
        if facts is None or verifier is None:
            return None, []
        claimed = _unverified_claims(params.get("client_assertion", ""))
        client_id = claimed.get("iss")
        if not isinstance(client_id, str):
            return None, []
        if client_id not in self.known.clients:
            return client_id, []
        audience = str(request.url.with_query(None))
        if not verifier.claims(params, client_id, audience):
            return None, []
        accepted = verifier.accepted[-1]
        header, claims = accepted["header"], accepted["claims"]
        if (
            header.get("typ") != "JWT"
            or header["alg"] not in facts.algorithms
            or claims["exp"] - claims["iat"] > facts.max_lifetime_minutes * 60
        ):
            return None, []
        if facts.scope_claim:
            scope = claims.get("scope")
            return client_id, scope.split(",") if isinstance(scope, str) else []
        return client_id, params.get("scope", "").split()


def _unverified_claims(assertion: str) -> dict[str, Any]:
    """The claims of a compact JWS, read before its signature is checked: the issuer
    says which client's key to check it with."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def _all_match(required: Mapping[str, str], given: Mapping[str, str]) -> bool:
    return all(re.fullmatch(pattern, given.get(name, "")) for name, pattern in required.items())


@asynccontextmanager
async def serve_vendor(
    facts: VendorFacts, *, open_server: bool = False
) -> AsyncIterator[VendorServer]:
    """The vendor's documented endpoints on a free port of 127.0.0.1; 404 elsewhere.
    With open_server, the API runs without authentication."""
    server = VendorServer(facts, accounts(facts), open_server=open_server)
    token = facts.token
    if token is not None and token.assertion is not None:
        registered = signing_key(REGISTERED_KEY, _key_algorithm(token))
        server.assertions = AssertionVerifier(
            registered.public_key(), key_id=facts.fill(token.assertion.key_id)
        )
    app = web.Application(middlewares=[server.record])
    app.router.add_route("*", facts.fill(facts.api.path), server.resource, name="api")
    if facts.token is not None:
        app.router.add_route("*", facts.fill(facts.token.path), server.token, name="token")
    async with serve_app(app, host=LOOPBACK) as origin:
        server.origin = origin
        yield server
