"""Local stand-ins for the SaaS APIs of the connector catalogue.

A ``VendorApi`` describes, as data, how one vendor answers the request a
catalogue entry verifies with: where it reads the credentials, the statuses,
error bodies and rate-limit headers it documents for accepted, rejected,
under-privileged and throttled credentials, and, for OAuth 2.0 entries, its
token endpoint. ``serve_vendor`` runs it as a real aiohttp server on
127.0.0.1. The paths here are the vendors' documented ones, written
independently of deploy/connectors/, so a wrong path in a catalogue entry
shows up as a 404.

Where a vendor's documentation gives no error body, the body is a plain JSON
error: the status code is what the driver reads.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from patchbay.api.reasons import Reason

# "limited_as_forbidden": over a limit the vendor reports with 403, not 429.
Access = Literal["granted", "forbidden", "throttled", "limited_as_forbidden"]
ReadCredential = Callable[[web.Request], str | None]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Reply:
    """One documented answer: status, JSON (or text) body and headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=dict(self.headers))
        return web.json_response(self.body, status=self.status, headers=dict(self.headers))


def header_token(name: str, prefix: str = "") -> ReadCredential:
    """The credential sent in a header, after an optional scheme prefix."""

    def read(request: web.Request) -> str | None:
        value = request.headers.get(name)
        if value is None or not value.startswith(prefix):
            return None
        return value[len(prefix) :]

    return read


def bearer_token(request: web.Request) -> str | None:
    return header_token("Authorization", "Bearer ")(request)


def query_token(name: str) -> ReadCredential:
    def read(request: web.Request) -> str | None:
        return request.query.get(name)

    return read


def _basic_pair(header: str | None) -> tuple[str, str] | None:
    if header is None or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def basic_credentials(request: web.Request) -> str | None:
    """HTTP basic auth, as 'user:password'."""
    pair = _basic_pair(request.headers.get("Authorization"))
    return f"{pair[0]}:{pair[1]}" if pair else None


@dataclass(frozen=True)
class TokenEndpoint:
    """An OAuth 2.0 token endpoint (RFC 6749 section 3.2) as the vendor runs it."""

    path: str
    grant: Literal["refresh_token", "client_credentials"]
    client_auth: Literal["body", "basic"]
    rejected_client: Reply
    rejected_grant: Reply = Reply(400, {"error": "invalid_grant"})
    # Some vendors answer an unknown client differently from a wrong secret.
    unknown_client: Reply | None = None
    required_scope: str | None = None
    invalid_scope: Reply = Reply(400, {"error": "invalid_scope"})
    # A rotating server invalidates each refresh token once it has been used.
    rotates_refresh_token: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VendorApi:
    """How a vendor answers the verification request of its catalogue entry."""

    method: str
    path: str
    read_credential: ReadCredential
    granted: Reply
    unauthenticated: Reply
    forbidden: Reply | None = None
    throttled: Reply | None = None
    # A rate or quota limit the vendor answers with 403 and a body that names it.
    limited_as_forbidden: Reply | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    # Header name -> regular expression its value must match; missing_header otherwise.
    required_headers: Mapping[str, str] = field(default_factory=dict)
    missing_header: Reply = Reply(400, {"error": "bad request"})
    # A body the endpoint refuses, e.g. Dropbox's RPC endpoints and a form content type.
    refuses_content_type: Callable[[str], bool] | None = None
    bad_content_type: Reply = Reply(400, "Bad HTTP Content-Type header")
    token_endpoint: TokenEndpoint | None = None


@dataclass(frozen=True)
class Case:
    """Secret values a Connection holds, and the reason it must end with."""

    name: str
    secrets: Mapping[str, str]
    expect: Reason
    # The vendor's token endpoint turns these credentials away, so no access
    # token exists and the API must not be called.
    refused_by_token_endpoint: bool = False


@dataclass(frozen=True)
class Contract:
    """A catalogue entry, its vendor's API, and the credentials that vendor knows."""

    connector: str
    api: VendorApi
    config: Mapping[str, str | int | bool]
    # The credential the vendor checks -> what it grants: a static token or
    # 'user:password' pair, a refresh token, or, for client credentials, a client id.
    accounts: Mapping[str, Access]
    cases: tuple[Case, ...]
    # OAuth 2.0 clients the token endpoint knows: client id -> secret.
    clients: Mapping[str, str] = field(default_factory=dict)


@dataclass
class VendorServer:
    """A running stand-in; ``origin`` is its http://127.0.0.1:port."""

    contract: Contract
    origin: str = ""
    accounts: dict[str, Access] = field(default_factory=dict)
    issued: dict[str, Access] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    async def resource(self, request: web.Request) -> web.StreamResponse:
        api = self.contract.api
        self.seen.append(f"{request.method} {request.path}")
        if request.method != api.method:
            return web.json_response({"error": "method not allowed"}, status=405)
        if any(request.query.get(k) != v for k, v in api.query.items()):
            return web.json_response({"error": "unexpected query"}, status=400)
        content_type = request.headers.get("Content-Type")
        if content_type and api.refuses_content_type and api.refuses_content_type(content_type):
            return api.bad_content_type.response()
        presented = api.read_credential(request)
        access = self._access_for(presented)
        if access is None:
            return api.unauthenticated.response()
        for name, pattern in api.required_headers.items():
            if not re.fullmatch(pattern, request.headers.get(name, "")):
                return api.missing_header.response()
        if access == "forbidden" and api.forbidden is not None:
            return api.forbidden.response()
        if access == "throttled" and api.throttled is not None:
            return api.throttled.response()
        if access == "limited_as_forbidden" and api.limited_as_forbidden is not None:
            return api.limited_as_forbidden.response()
        return api.granted.response()

    def _access_for(self, presented: str | None) -> Access | None:
        if presented is None:
            return None
        if self.contract.api.token_endpoint is not None:
            return self.issued.get(presented)
        return self.accounts.get(presented)

    async def token(self, request: web.Request) -> web.StreamResponse:
        endpoint = self.contract.api.token_endpoint
        assert endpoint is not None
        self.seen.append(f"{request.method} {request.path}")
        if request.method != "POST":
            return web.json_response({"error": "invalid_request"}, status=405)
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        client = self._client(request, params, endpoint)
        if client is None:
            return endpoint.rejected_client.response()
        if client not in self.contract.clients:
            return (endpoint.unknown_client or endpoint.rejected_client).response()
        if params.get("grant_type") != endpoint.grant:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if endpoint.required_scope is not None and endpoint.required_scope not in params.get(
            "scope", ""
        ).split(" "):
            return endpoint.invalid_scope.response()
        reply: dict[str, Any] = {"token_type": "Bearer", "expires_in": 3600, **endpoint.extra}
        if endpoint.grant == "refresh_token":
            refresh = params.get("refresh_token", "")
            access = self.accounts.get(refresh)
            if access is None:
                return endpoint.rejected_grant.response()
            if endpoint.rotates_refresh_token:
                del self.accounts[refresh]
                rotated = f"rt-{secrets.token_hex(8)}"
                self.accounts[rotated] = access
                reply["refresh_token"] = rotated
        else:
            found = self.accounts.get(client)
            if found is None:
                return endpoint.rejected_client.response()
            access = found
        token = f"at-{secrets.token_hex(12)}"
        self.issued[token] = access
        return web.json_response({"access_token": token, **reply})

    def _client(
        self, request: web.Request, params: Mapping[str, str], endpoint: TokenEndpoint
    ) -> str | None:
        """The authenticated client id, or None when its secret does not match."""
        if endpoint.client_auth == "basic":
            pair = _basic_pair(request.headers.get("Authorization"))
            if pair is None:
                return None
            client_id, client_secret = pair
        else:
            client_id = params.get("client_id", "")
            client_secret = params.get("client_secret", "")
        known = self.contract.clients.get(client_id)
        if known is None:
            return client_id or None
        return client_id if secrets.compare_digest(known, client_secret) else None


@asynccontextmanager
async def serve_vendor(contract: Contract) -> AsyncIterator[VendorServer]:
    """The vendor's documented endpoints on a free port of 127.0.0.1; 404 elsewhere."""
    server = VendorServer(contract, accounts=dict(contract.accounts))
    app = web.Application()
    app.router.add_route("*", contract.api.path, server.resource)
    if contract.api.token_endpoint is not None:
        app.router.add_route("*", contract.api.token_endpoint.path, server.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    server.origin = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


# ----- the vendors ------------------------------------------------------------------

VERIFIED = Reason.VERIFIED
AUTH_FAILED = Reason.AUTHENTICATION_FAILED
DENIED = Reason.PERMISSION_DENIED
THROTTLED = Reason.RATE_LIMITED


def _json_api_error(status: int, code: str, title: str) -> dict[str, Any]:
    return {
        "errors": [{"id": secrets.token_hex(8), "status": status, "code": code, "title": title}]
    }


def _google_error(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "errors": [{"reason": reason}]}}


# Google's OAuth 2.0 token endpoint, shared by every Google API.
GOOGLE_TOKEN = TokenEndpoint(
    path="/token",
    grant="refresh_token",
    client_auth="body",
    rejected_client=Reply(401, {"error": "invalid_client", "error_description": "Unauthorized"}),
    rejected_grant=Reply(
        400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    ),
    extra={"scope": "https://www.googleapis.com/auth/drive.metadata.readonly"},
)


def _google_api(path: str, query: Mapping[str, str], granted: Any) -> VendorApi:
    return VendorApi(
        method="GET",
        path=path,
        query=query,
        read_credential=bearer_token,
        granted=Reply(200, granted),
        unauthenticated=Reply(
            401,
            _google_error(401, "authError", "Request had invalid authentication credentials."),
            {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        ),
        forbidden=Reply(
            403,
            _google_error(
                403, "insufficientPermissions", "Request had insufficient authentication scopes."
            ),
        ),
        throttled=Reply(429, _google_error(429, "rateLimitExceeded", "Rate Limit Exceeded")),
        limited_as_forbidden=Reply(
            403, _google_error(403, "userRateLimitExceeded", "User Rate Limit Exceeded")
        ),
        token_endpoint=GOOGLE_TOKEN,
    )


def _oauth_cases(api: VendorApi, good: Mapping[str, str]) -> tuple[Case, ...]:
    """The cases of an OAuth 2.0 entry whose vendor knows the client in ``good``.

    ``good`` holds clientId and clientSecret, plus refreshToken for the
    refresh-token grant; the limited, busy and capped accounts share the client.
    """
    cases = [Case("valid", good, VERIFIED)]
    if "refreshToken" in good:
        cases.append(
            Case(
                "revoked-refresh-token",
                {**good, "refreshToken": "rt-revoked"},
                AUTH_FAILED,
                refused_by_token_endpoint=True,
            )
        )
    cases.append(
        Case(
            "wrong-client-secret",
            {**good, "clientSecret": "not-the-secret"},
            AUTH_FAILED,
            refused_by_token_endpoint=True,
        )
    )
    if api.forbidden is not None:
        cases.append(Case("under-privileged", _variant(good, "limited"), DENIED))
    if api.throttled is not None:
        cases.append(Case("over-the-rate-limit", _variant(good, "busy"), THROTTLED))
    if api.limited_as_forbidden is not None:
        # the vendor names the limit in a 403's body: the entry's httpErrors read it
        cases.append(Case("over-a-limit-reported-as-403", _variant(good, "capped"), THROTTLED))
    return tuple(cases)


def _variant(good: Mapping[str, str], kind: str) -> dict[str, str]:
    """The same client with the refresh token (or client) of another account."""
    if "refreshToken" in good:
        return {**good, "refreshToken": f"rt-{kind}"}
    return {**good, "clientId": f"{good['clientId']}-{kind}"}


def _oauth_accounts(good: Mapping[str, str]) -> dict[str, Access]:
    key = "refreshToken" if "refreshToken" in good else "clientId"
    return {
        good[key]: "granted",
        _variant(good, "limited")[key]: "forbidden",
        _variant(good, "busy")[key]: "throttled",
        _variant(good, "capped")[key]: "limited_as_forbidden",
    }


def _oauth_clients(good: Mapping[str, str]) -> dict[str, str]:
    client_id, client_secret = good["clientId"], good["clientSecret"]
    if "refreshToken" in good:
        return {client_id: client_secret}
    return {
        client_id: client_secret,
        f"{client_id}-limited": client_secret,
        f"{client_id}-busy": client_secret,
        f"{client_id}-capped": client_secret,
    }


def _oauth(
    connector: str,
    api: VendorApi,
    good: Mapping[str, str],
    config: Mapping[str, str | int | bool] | None = None,
    *,
    extra_cases: tuple[Case, ...] = (),
) -> Contract:
    return Contract(
        connector=connector,
        api=api,
        config=config or {},
        accounts=_oauth_accounts(good),
        clients=_oauth_clients(good),
        cases=_oauth_cases(api, good) + extra_cases,
    )


REFRESH_GRANT = {"clientId": "client-1", "clientSecret": "client-secret-1", "refreshToken": "rt-1"}
CLIENT_GRANT = {"clientId": "client-1", "clientSecret": "client-secret-1"}

SHOPIFY = Contract(
    connector="shopify",
    config={"shop": "acme-outdoor"},
    api=VendorApi(
        method="GET",
        path="/admin/api/2026-07/shop.json",
        read_credential=header_token("X-Shopify-Access-Token"),
        granted=Reply(
            200,
            {"shop": {"id": 548380009, "myshopify_domain": "acme-outdoor.myshopify.com"}},
            {"X-Shopify-Shop-Api-Call-Limit": "1/40"},
        ),
        unauthenticated=Reply(
            401,
            {
                "errors": "[API] Invalid API key or access token "
                "(unrecognized login or wrong password)"
            },
        ),
        throttled=Reply(
            429,
            {"errors": "Exceeded 2 calls per second for api client. Reduce request rates."},
            {"Retry-After": "2.0", "X-Shopify-Shop-Api-Call-Limit": "40/40"},
        ),
    ),
    accounts={"shpat_valid": "granted", "shpat_busy": "throttled"},
    cases=(
        Case("valid", {"apiKey": "shpat_valid"}, VERIFIED),
        Case("revoked-token", {"apiKey": "shpat_revoked"}, AUTH_FAILED),
        Case("over-the-rate-limit", {"apiKey": "shpat_busy"}, THROTTLED),
    ),
)

KLAVIYO = Contract(
    connector="klaviyo",
    config={},
    api=VendorApi(
        method="GET",
        path="/api/accounts/",
        read_credential=header_token("Authorization", "Klaviyo-API-Key "),
        required_headers={"revision": r"[0-9]{4}-[0-9]{2}-[0-9]{2}(\.[a-z]+)?"},
        missing_header=Reply(
            400, _json_api_error(400, "invalid", "The revision header is missing or invalid.")
        ),
        granted=Reply(
            200,
            {"data": [{"type": "account", "id": "AbC123", "attributes": {}}]},
            {"RateLimit-Limit": "15", "RateLimit-Remaining": "14", "RateLimit-Reset": "44"},
        ),
        unauthenticated=Reply(
            401, _json_api_error(401, "not_authenticated", "Incorrect authentication credentials.")
        ),
        forbidden=Reply(
            403,
            _json_api_error(
                403, "permission_denied", "You do not have permission to perform this action."
            ),
        ),
        throttled=Reply(
            429, _json_api_error(429, "throttled", "Request was throttled."), {"Retry-After": "3"}
        ),
    ),
    accounts={"pk_valid": "granted", "pk_no_accounts_scope": "forbidden", "pk_busy": "throttled"},
    cases=(
        Case("valid", {"apiKey": "pk_valid"}, VERIFIED),
        Case("unknown-key", {"apiKey": "pk_unknown"}, AUTH_FAILED),
        Case("key-without-accounts-scope", {"apiKey": "pk_no_accounts_scope"}, DENIED),
        Case("over-the-rate-limit", {"apiKey": "pk_busy"}, THROTTLED),
    ),
)

GORGIAS = Contract(
    connector="gorgias",
    config={"domain": "acme", "username": "agent@acme.example"},
    api=VendorApi(
        method="GET",
        path="/api/account",
        read_credential=basic_credentials,
        granted=Reply(
            200,
            {"domain": "acme", "status": "active"},
            {"X-Gorgias-Account-Api-Call-Limit": "1/40"},
        ),
        unauthenticated=Reply(401, {"error": {"msg": "Unauthorized"}}),
        throttled=Reply(
            429,
            {"error": {"msg": "Too many requests"}},
            {"Retry-after": "5", "X-Gorgias-Account-Api-Call-Limit": "40/40"},
        ),
    ),
    accounts={
        "agent@acme.example:key-valid": "granted",
        "agent@acme.example:key-busy": "throttled",
    },
    cases=(
        Case("valid", {"password": "key-valid"}, VERIFIED),
        Case("wrong-api-key", {"password": "key-revoked"}, AUTH_FAILED),
        Case("over-the-rate-limit", {"password": "key-busy"}, THROTTLED),
    ),
)

SALESFORCE = _oauth(
    "salesforce",
    VendorApi(
        method="GET",
        # the resource list of an API version (REST API Developer Guide, "Resources by
        # Version"): readable by any API-enabled user
        path="/services/data/v64.0/",
        read_credential=bearer_token,
        granted=Reply(
            200,
            {
                "sobjects": "/services/data/v64.0/sobjects",
                "limits": "/services/data/v64.0/limits",
                "query": "/services/data/v64.0/query",
            },
        ),
        unauthenticated=Reply(
            401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
        ),
        forbidden=Reply(
            403,
            [
                {
                    "message": "The REST API is not enabled for this Organization.",
                    "errorCode": "API_DISABLED_FOR_ORG",
                }
            ],
        ),
        # The org's daily API request allocation is used up.
        limited_as_forbidden=Reply(
            403,
            [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
        ),
        token_endpoint=TokenEndpoint(
            path="/services/oauth2/token",
            grant="refresh_token",
            client_auth="body",
            rejected_client=Reply(
                400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            ),
            unknown_client=Reply(
                400,
                {"error": "invalid_client_id", "error_description": "client identifier invalid"},
            ),
            rejected_grant=Reply(
                400,
                {"error": "invalid_grant", "error_description": "expired access/refresh token"},
            ),
            extra={"instance_url": "https://acme.my.salesforce.com", "scope": "api refresh_token"},
        ),
    ),
    REFRESH_GRANT,
    {"myDomain": "acme"},
    extra_cases=(
        Case(
            "unknown-consumer-key",
            {**REFRESH_GRANT, "clientId": "no-such-app"},
            AUTH_FAILED,
            refused_by_token_endpoint=True,
        ),
    ),
)

NETSUITE_UNAUTHORIZED = {
    "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
    "title": "Unauthorized",
    "status": 401,
    "o:errorDetails": [{"detail": "Invalid login attempt.", "o:errorCode": "INVALID_LOGIN"}],
}

NETSUITE = _oauth(
    "netsuite",
    VendorApi(
        method="GET",
        path="/services/rest/record/v1/metadata-catalog",
        read_credential=bearer_token,
        granted=Reply(200, {"items": [{"name": "customer", "links": []}]}),
        unauthenticated=Reply(401, NETSUITE_UNAUTHORIZED),
        forbidden=Reply(
            403,
            {
                "title": "Forbidden",
                "status": 403,
                "o:errorDetails": [
                    {"detail": "Permission denied.", "o:errorCode": "INSUFFICIENT_PERMISSION"}
                ],
            },
        ),
        throttled=Reply(
            429,
            {
                "title": "Too Many Requests",
                "status": 429,
                "o:errorDetails": [
                    {
                        "detail": "Concurrency limit exceeded.",
                        "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED",
                    }
                ],
            },
        ),
        token_endpoint=TokenEndpoint(
            path="/services/rest/auth/oauth2/v1/token",
            grant="refresh_token",
            client_auth="basic",
            rejected_client=Reply(401, {"error": "invalid_client"}),
            rejected_grant=Reply(400, {"error": "invalid_grant"}),
        ),
    ),
    REFRESH_GRANT,
    {"accountId": "1234567-sb1"},
)

AMAZON_SP = _oauth(
    "amazon-sp",
    VendorApi(
        method="GET",
        path="/sellers/v1/marketplaceParticipations",
        # The LWA access token goes in x-amz-access-token, not in Authorization.
        read_credential=header_token("x-amz-access-token"),
        granted=Reply(
            200,
            {"payload": [{"marketplace": {"id": "ATVPDKIKX0DER"}, "participation": {}}]},
            {"x-amzn-RateLimit-Limit": "0.0167"},
        ),
        unauthenticated=Reply(
            403,
            {
                "errors": [
                    {
                        "code": "Unauthorized",
                        "message": "Access to requested resource is denied.",
                        "details": "The access token you provided is revoked, malformed "
                        "or invalid.",
                    }
                ]
            },
        ),
        forbidden=Reply(
            403,
            {
                "errors": [
                    {
                        "code": "Unauthorized",
                        "message": "Access to requested resource is denied.",
                        "details": "",
                    }
                ]
            },
        ),
        throttled=Reply(
            429,
            {
                "errors": [
                    {
                        "code": "QuotaExceeded",
                        "message": "You exceeded your quota for the requested resource.",
                        "details": "",
                    }
                ]
            },
            {"x-amzn-RateLimit-Limit": "0.0167"},
        ),
        token_endpoint=TokenEndpoint(
            path="/auth/o2/token",
            grant="refresh_token",
            client_auth="body",
            rejected_client=Reply(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            ),
            rejected_grant=Reply(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "The request has an invalid grant parameter",
                },
            ),
        ),
    ),
    REFRESH_GRANT,
)

GOOGLE_DRIVE = _oauth(
    "google-drive",
    _google_api(
        "/drive/v3/about",
        {"fields": "user"},
        {"user": {"displayName": "Ada", "emailAddress": "ada@example.com"}},
    ),
    REFRESH_GRANT,
)

GMAIL_INBOX = _oauth(
    "gmail-inbox",
    _google_api(
        "/gmail/v1/users/me/profile",
        {},
        {"emailAddress": "ada@example.com", "messagesTotal": 1204, "historyId": "98231"},
    ),
    REFRESH_GRANT,
)

MSFT_SHAREPOINT = _oauth(
    "msft-sharepoint",
    VendorApi(
        method="GET",
        path="/v1.0/sites/root",
        query={"$select": "id,webUrl"},
        read_credential=bearer_token,
        granted=Reply(
            200,
            {"id": "contoso.sharepoint.com,2C712604", "webUrl": "https://contoso.sharepoint.com"},
        ),
        unauthenticated=Reply(
            401,
            {"error": {"code": "InvalidAuthenticationToken", "message": "Access token is empty."}},
        ),
        forbidden=Reply(
            403,
            {
                "error": {
                    "code": "accessDenied",
                    "message": "Either scp or roles claim need to be present in the token.",
                }
            },
        ),
        throttled=Reply(
            429,
            {"error": {"code": "TooManyRequests", "message": "Too many requests."}},
            {"Retry-After": "10"},
        ),
        token_endpoint=TokenEndpoint(
            path="/contoso.onmicrosoft.com/oauth2/v2.0/token",
            grant="client_credentials",
            client_auth="body",
            required_scope="https://graph.microsoft.com/.default",
            rejected_client=Reply(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            ),
            unknown_client=Reply(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": "AADSTS700016: Application not found in the directory.",
                    "error_codes": [700016],
                },
            ),
            invalid_scope=Reply(
                400,
                {
                    "error": "invalid_scope",
                    "error_description": "AADSTS1002012: The provided value for scope "
                    "is not valid.",
                },
            ),
        ),
    ),
    CLIENT_GRANT,
    {"tenantId": "contoso.onmicrosoft.com"},
    extra_cases=(
        Case(
            "unknown-application",
            {**CLIENT_GRANT, "clientId": "no-such-app"},
            AUTH_FAILED,
            refused_by_token_endpoint=True,
        ),
    ),
)

DROPBOX = _oauth(
    "dropbox",
    VendorApi(
        method="POST",
        path="/2/users/get_current_account",
        read_credential=bearer_token,
        # An RPC endpoint without arguments takes no body, or JSON.
        refuses_content_type=lambda value: not value.startswith("application/json"),
        bad_content_type=Reply(
            400,
            'Error in call to API function "users/get_current_account": '
            'Bad HTTP "Content-Type" header.',
        ),
        granted=Reply(200, {"account_id": "dbid:AAH4f99", "email": "ada@example.com"}),
        unauthenticated=Reply(
            401,
            {"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}},
        ),
        throttled=Reply(
            429,
            {
                "error_summary": "too_many_requests/",
                "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 300},
            },
            {"Retry-After": "300"},
        ),
        token_endpoint=TokenEndpoint(
            path="/oauth2/token",
            grant="refresh_token",
            client_auth="body",
            rejected_client=Reply(
                400, {"error": "invalid_client", "error_description": "Invalid client_id or secret"}
            ),
            rejected_grant=Reply(
                400, {"error": "invalid_grant", "error_description": "refresh token is invalid"}
            ),
        ),
    ),
    REFRESH_GRANT,
)

MLFLOW = Contract(
    connector="mlflow",
    config={"username": "ml-ops"},
    api=VendorApi(
        method="GET",
        path="/api/2.0/mlflow/experiments/search",
        query={"max_results": "1"},
        read_credential=basic_credentials,
        granted=Reply(200, {"experiments": [{"experiment_id": "0", "name": "Default"}]}),
        unauthenticated=Reply(
            401,
            "You are not authenticated. "
            "Please see the MLflow documentation on how to authenticate.",
            {"WWW-Authenticate": 'Basic realm="mlflow"'},
        ),
    ),
    accounts={"ml-ops:pw-valid": "granted"},
    cases=(
        Case("valid", {"password": "pw-valid"}, VERIFIED),
        Case("wrong-password", {"password": "pw-wrong"}, AUTH_FAILED),
    ),
)

BULLHORN = _oauth(
    "bullhorn",
    VendorApi(
        method="GET",
        path="/rest-services/login",
        query={"version": "2.0"},
        # The REST login takes the OAuth access token as a query parameter.
        read_credential=query_token("access_token"),
        granted=Reply(
            200,
            {
                "BhRestToken": "bh-session",
                "restUrl": "https://rest42.bullhornstaffing.com/rest-services/e999/",
            },
        ),
        unauthenticated=Reply(401, {"errorMessage": "Invalid access token", "errorCode": 401}),
        token_endpoint=TokenEndpoint(
            path="/oauth/token",
            grant="refresh_token",
            client_auth="body",
            rejected_client=Reply(400, {"error": "invalid_client"}),
            rejected_grant=Reply(400, {"error": "invalid_grant"}),
            rotates_refresh_token=True,
        ),
    ),
    REFRESH_GRANT,
)

REDO = Contract(
    connector="redo",
    config={"storeId": "64e5a8a1af49a89df37e4ee7"},
    api=VendorApi(
        method="GET",
        path="/v2.2/stores/64e5a8a1af49a89df37e4ee7/returns",
        query={"page-size": "1"},
        read_credential=bearer_token,
        granted=Reply(200, {"returns": []}),
        unauthenticated=Reply(401, {"error": "Unauthorized"}),
    ),
    accounts={"redo-secret-valid": "granted"},
    cases=(
        Case("valid", {"token": "redo-secret-valid"}, VERIFIED),
        Case("revoked-secret", {"token": "redo-secret-revoked"}, AUTH_FAILED),
    ),
)

RYDERSHIP = _oauth(
    "rydership",
    VendorApi(
        method="GET",
        path="/api/v2/items",
        query={"per_page": "1"},
        read_credential=bearer_token,
        granted=Reply(200, [{"id": 1, "sku": "TEE-BLK-M"}]),
        unauthenticated=Reply(
            401,
            {"error": "invalid_token"},
            {"WWW-Authenticate": 'Bearer realm="Doorkeeper", error="invalid_token"'},
        ),
        token_endpoint=TokenEndpoint(
            path="/oauth/token",
            grant="refresh_token",
            client_auth="body",
            rejected_client=Reply(401, {"error": "invalid_client"}),
            rejected_grant=Reply(400, {"error": "invalid_grant"}),
            extra={"scope": "user_read"},
        ),
    ),
    REFRESH_GRANT,
)

FLEXIROAM = Contract(
    connector="flexiroam",
    config={},
    api=VendorApi(
        method="GET",
        path="/v3/plans",
        read_credential=bearer_token,
        granted=Reply(200, {"success": True, "data": [], "msg": "OK"}),
        unauthenticated=Reply(401, {"success": False, "msg": "Unauthorized"}),
    ),
    accounts={"flexi-token-valid": "granted"},
    cases=(
        Case("valid", {"token": "flexi-token-valid"}, VERIFIED),
        Case("unknown-token", {"token": "flexi-token-unknown"}, AUTH_FAILED),
    ),
)

STARLINK = _oauth(
    "starlink",
    VendorApi(
        method="GET",
        # public API V2, "Get account information" (the V1 enterprise API answers 404
        # since 2026-06-01)
        path="/api/public/v2/account",
        read_credential=bearer_token,
        granted=Reply(
            200,
            {
                "content": {"accountNumber": "ACC-0000000-00000-00", "regionCode": "US"},
                "errors": [],
                "warnings": [],
                "information": [],
                "isValid": True,
            },
        ),
        forbidden=Reply(
            403,
            {
                "content": None,
                "errors": [
                    {
                        "memberNames": [],
                        "errorMessage": "Missing required permission for this endpoint or resource",
                    }
                ],
                "isValid": False,
            },
        ),
        unauthenticated=Reply(401, "", {"WWW-Authenticate": 'Bearer error="invalid_token"'}),
        token_endpoint=TokenEndpoint(
            path="/api/auth/connect/token",
            grant="client_credentials",
            client_auth="body",
            rejected_client=Reply(400, {"error": "invalid_client"}),
        ),
    ),
    CLIENT_GRANT,
)

CONTRACTS: tuple[Contract, ...] = (
    SHOPIFY,
    KLAVIYO,
    GORGIAS,
    SALESFORCE,
    NETSUITE,
    AMAZON_SP,
    GOOGLE_DRIVE,
    MSFT_SHAREPOINT,
    GMAIL_INBOX,
    DROPBOX,
    MLFLOW,
    BULLHORN,
    REDO,
    RYDERSHIP,
    FLEXIROAM,
    STARLINK,
)
