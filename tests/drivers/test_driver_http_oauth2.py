"""The http driver's OAuth 2.0 grants against a real token endpoint and API.

The token endpoint and the API are aiohttp servers started by each test on
127.0.0.1 or 127.0.0.2; nothing here connects anywhere else.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from driver_calls import OPEN_POLICY, run
from http_server import (
    JWT_BEARER,
    AssertionVerifier,
    CertificateAuthority,
    Handler,
    OAuth2Server,
    answer,
    serve,
)
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core.egress import ConnectorEgress, EgressPolicy, parse_networks
from patchbay.drivers.base import (
    ACCESS_TOKEN_KEY,
    EXPIRES_AT_FORMAT,
    EXPIRES_AT_KEY,
    DriverError,
    TlsMaterial,
    VerifyRequest,
)
from patchbay.drivers.text import REDACTED
from tests.drivers.test_driver_http import make_request, verify, verify_error

CLIENT_ID = "patchbay-client"


def provider(**settings: Any) -> OAuth2Server:
    return OAuth2Server(client_id=CLIENT_ID, client_secret=f"cs-{uuid.uuid4().hex}", **settings)


def client_credentials(token_url: str = "/oauth/token", **oauth2: Any) -> dict[str, Any]:
    return {"type": "oauth2ClientCredentials", "oauth2": {"tokenUrl": token_url, **oauth2}}


def refresh_token_grant(token_url: str = "/oauth/token", **oauth2: Any) -> dict[str, Any]:
    return {"type": "oauth2RefreshToken", "oauth2": {"tokenUrl": token_url, **oauth2}}


def client_secrets(server: OAuth2Server, **more: str) -> dict[str, str]:
    return {"clientId": server.client_id, "clientSecret": server.client_secret, **more}


def me_request(
    url: str, server: OAuth2Server, auth: dict[str, Any] | None = None, **more: Any
) -> VerifyRequest:
    """A request for the API's /v1/me, its client's credentials those ``server`` knows."""
    auth = auth if auth is not None else client_credentials()
    return make_request(url, path="/v1/me", auth=auth, secrets=client_secrets(server), **more)


# --- client credentials ------------------------------------------------------------


def test_client_credentials_token_is_sent_as_bearer_and_verifies() -> None:
    server = provider(allowed_scopes=frozenset({"read", "write"}))

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = me_request(
                url,
                server,
                client_credentials(scopes=["read", "write"], audience="urn:patchbay:test"),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert outcome.server_version == "oauth2-api/1.0"
        assert server.token_forms == [
            {
                "grant_type": "client_credentials",
                "scope": "read write",
                "audience": "urn:patchbay:test",
                "client_id": CLIENT_ID,
                "client_secret": server.client_secret,
            }
        ]
        assert server.api_auth_headers == [f"Bearer {server.issued[0]}"]

    run(scenario())


@pytest.mark.parametrize(
    ("lifetime", "expiry"),
    [(3600, True), ("600", True), (None, False), (-5, False), (10**9, False)],
    ids=["seconds", "as-text", "absent", "negative", "beyond-a-year"],
)
def test_the_access_token_is_kept_for_the_binding_only_when_asked(
    lifetime: int | str | None, expiry: bool
) -> None:
    server = provider(allowed_scopes=frozenset({"read"}), token_lifetime=lifetime)

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            kept = dataclasses.replace(me_request(url, server), keep_access_token=True)
            await verify(kept)
            not_kept = me_request(url, server)
            await verify(not_kept)
        assert kept.granted[ACCESS_TOKEN_KEY] == server.issued[0]
        assert (EXPIRES_AT_KEY in kept.granted) is expiry
        if expiry:
            expires = datetime.strptime(kept.granted[EXPIRES_AT_KEY], EXPIRES_AT_FORMAT)
            left = expires.replace(tzinfo=UTC) - datetime.now(UTC)
            assert timedelta(0) < left <= timedelta(seconds=int(str(lifetime)))
        assert not_kept.granted == {}

    run(scenario())


def test_client_secret_goes_in_http_basic_auth_when_the_connector_asks() -> None:
    server = OAuth2Server(client_id="client id/1", client_secret="s3cret:with&odd=chars")

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = me_request(url, server, client_credentials(clientAuth="basic"))
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert server.token_forms == [{"grant_type": "client_credentials"}]
        assert server.token_auth_headers[0].startswith("Basic ")

    run(scenario())


def test_wrong_client_secret_is_authentication_failed_and_the_api_is_not_called() -> None:
    server = provider()

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = make_request(
                url,
                path="/v1/me",
                auth=client_credentials(),
                secrets={"clientId": CLIENT_ID, "clientSecret": "wrong-client-secret"},
            )
            error = await verify_error(request)
        assert error.code == Reason.AUTHENTICATION_FAILED
        assert error.retryable is False
        assert "invalid_client" in error.message
        assert f"POST {url}/oauth/token" in error.message
        assert "wrong-client-secret" not in error.message
        assert server.api_auth_headers == []

    run(scenario())


def test_missing_client_secret_is_secret_key_missing_before_any_request() -> None:
    async def scenario() -> None:
        async with serve({"/oauth/token": answer()}) as (url, seen):
            request = make_request(url, auth=client_credentials(), secrets={"clientId": CLIENT_ID})
            error = await verify_error(request)
        assert error.code == Reason.SECRET_KEY_MISSING
        assert "clientSecret" in error.message
        assert seen.count == 0

    run(scenario())


def test_scope_not_granted_to_the_client_is_permission_denied() -> None:
    server = provider(allowed_scopes=frozenset({"read"}))

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = me_request(url, server, client_credentials(scopes=["read", "admin"]))
            error = await verify_error(request)
        assert error.code == Reason.PERMISSION_DENIED
        assert error.retryable is False
        assert "invalid_scope" in error.message

    run(scenario())


def test_scope_placeholders_are_filled_with_config_values_as_they_are() -> None:
    server = provider()

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            # the scope names the API's own endpoint, as a national cloud's Graph needs
            server.allowed_scopes = frozenset({f"{url}/.default", "site:contoso/hr"})
            request = me_request(
                url,
                server,
                client_credentials(scopes=["{baseUrl}/.default", "site:{site}"]),
                config={"site": "contoso/hr"},
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert server.token_forms[0]["scope"] == f"{url}/.default site:contoso/hr"

    run(scenario())


@pytest.mark.parametrize(
    ("scope", "site", "problem"),
    [
        ("{clientSecret}/.default", "hr", "names {clientSecret}, which is not a non-secret"),
        ("site:{site}", "hr admin", "is not one scope once filled"),
    ],
    ids=["secret-variable", "value-with-a-space"],
)
def test_a_scope_that_names_a_secret_or_splits_in_two_is_config_invalid_before_any_request(
    scope: str, site: str, problem: str
) -> None:
    async def scenario() -> None:
        async with serve({"/oauth/token": answer()}) as (url, seen):
            request = make_request(
                url,
                auth=client_credentials(scopes=[scope]),
                config={"site": site},
                secrets={"clientId": CLIENT_ID, "clientSecret": "cs-never-in-a-scope"},
            )
            error = await verify_error(request)
        assert error.code == Reason.CONFIG_INVALID
        assert problem in error.message
        assert "cs-never-in-a-scope" not in error.message
        assert seen.count == 0

    run(scenario())


# --- refresh token -----------------------------------------------------------------


def test_refresh_token_is_exchanged_for_an_access_token_that_verifies() -> None:
    server = provider(refresh_token=f"rt-{uuid.uuid4().hex}")

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = make_request(
                url,
                path="/v1/me",
                auth=refresh_token_grant(),
                secrets=client_secrets(server, refreshToken=server.refresh_token),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert server.token_forms[0]["grant_type"] == "refresh_token"
        assert server.token_forms[0]["refresh_token"] == server.refresh_token
        assert server.api_auth_headers == [f"Bearer {server.issued[0]}"]

    run(scenario())


def test_a_rotated_refresh_token_is_handed_back_and_the_spent_one_no_longer_works() -> None:
    server = provider(refresh_token=f"rt-{uuid.uuid4().hex}")
    server.rotate_refresh_token = True
    first_token = server.refresh_token

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):

            def request(refresh: str) -> VerifyRequest:
                return make_request(
                    url,
                    path="/v1/me",
                    auth=refresh_token_grant(),
                    secrets=client_secrets(server, refreshToken=refresh),
                )

            first = request(first_token)
            assert (await verify(first)).code == Reason.VERIFIED
            issued = first.issued["refreshToken"]
            assert issued == server.refresh_token != first_token
            second = request(issued)
            outcome = await verify(second)
            assert outcome.code == Reason.VERIFIED
            assert issued not in outcome.message
            assert second.issued["refreshToken"] == server.refresh_token != issued
            spent = await verify_error(request(first_token))
            assert spent.code == Reason.AUTHENTICATION_FAILED

    run(scenario())


def test_expired_refresh_token_is_authentication_failed() -> None:
    server = provider(refresh_token="rt-current")

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = make_request(
                url,
                path="/v1/me",
                auth=refresh_token_grant(),
                secrets=client_secrets(server, refreshToken="rt-expired-long-ago"),
            )
            error = await verify_error(request)
        assert error.code == Reason.AUTHENTICATION_FAILED
        assert error.retryable is False
        assert "invalid_grant" in error.message
        assert "rt-expired-long-ago" not in error.message
        assert server.api_auth_headers == []

    run(scenario())


def test_access_and_refresh_tokens_never_appear_in_the_outcome() -> None:
    # The provider rotates the refresh token; the API echoes the request, with
    # its Authorization header, in error bodies and a Server header.
    server = provider(refresh_token=f"rt-{uuid.uuid4().hex}", rotate_refresh_token=True)
    first_refresh_token = server.refresh_token

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        return web.Response(status=500, text=f"cannot serve {auth}", headers={"Server": auth})

    async def scenario() -> None:
        texts: list[str] = []
        async with serve({**server.routes(), "/v1/echo": echo}) as (url, _):
            for path, checks in (
                ("/v1/me", [{"type": "http", "http": {"path": "/v1/echo"}}]),
                ("/v1/echo", []),
            ):
                request = make_request(
                    url,
                    path=path,
                    auth=refresh_token_grant(),
                    # Each verification uses the refresh token the provider knows.
                    secrets=client_secrets(server, refreshToken=server.refresh_token),
                    checks=checks,
                )
                try:
                    outcome = await verify(request)
                except DriverError as error:
                    texts += [str(error), repr(error), error.message]
                else:
                    texts += [repr(outcome), outcome.message, str(outcome.server_version)]
                    texts += [c.message for c in outcome.checks]
        assert len(server.issued) == 2
        assert any(f"HTTP 500 from server: cannot serve {REDACTED}" in t for t in texts)
        tokens = [*server.issued, first_refresh_token, server.refresh_token]
        for text in texts:
            for token in tokens:
                assert token not in text

    run(scenario())


# --- client assertion (RFC 7523) ---------------------------------------------------


def _key(kind: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def assertion_provider(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> OAuth2Server:
    """A token endpoint that knows the client by the public half of ``key``, as kid cert-7."""
    return provider(
        allowed_scopes=frozenset({"rest_webservices", "restlets"}),
        assertion=AssertionVerifier(key.public_key(), key_id="cert-7"),
    )


def assertion_request(
    url: str, key_pem: str, algorithm: str, *, scope_claim: bool = False
) -> VerifyRequest:
    auth = client_credentials(
        scopes=["restlets", "rest_webservices"],
        clientAuth="privateKeyJwt",
        clientAssertion={
            "algorithm": algorithm,
            "keyId": "{certificateId}",
            "scopeClaim": scope_claim,
        },
    )
    return make_request(
        url,
        path="/v1/me",
        auth=auth,
        config={"certificateId": "cert-7"},
        secrets={"clientId": CLIENT_ID, "privateKey": key_pem},
    )


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "PS256"), ("ec", "ES256")])
def test_a_client_assertion_signed_with_the_connections_key_gets_a_token_that_verifies(
    kind: str, algorithm: str
) -> None:
    key = _key(kind)
    server = assertion_provider(key)

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = assertion_request(url, _pem(key), algorithm)
            first = await verify(request)
            # every verification signs a new assertion: the endpoint refuses a replayed jti
            second = await verify(request)
        assert (first.code, second.code) == (Reason.VERIFIED, Reason.VERIFIED)
        form = server.token_forms[0]
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == JWT_BEARER
        assert form["scope"] == "restlets rest_webservices"
        assert "client_secret" not in form and "client_id" not in form
        assert server.token_auth_headers == ["", ""]
        assert server.assertion is not None
        accepted = server.assertion.accepted
        assert [a["header"]["alg"] for a in accepted] == [algorithm, algorithm]
        assert accepted[0]["claims"]["sub"] == CLIENT_ID
        assert accepted[0]["claims"]["jti"] != accepted[1]["claims"]["jti"]

    run(scenario())


def test_scopes_go_in_the_assertion_when_the_connector_says() -> None:
    key = _key("ec")
    server = assertion_provider(key)

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            outcome = await verify(assertion_request(url, _pem(key), "ES256", scope_claim=True))
        assert outcome.code == Reason.VERIFIED
        assert "scope" not in server.token_forms[0]
        assert server.assertion is not None
        assert server.assertion.accepted[0]["claims"]["scope"] == "restlets,rest_webservices"

    run(scenario())


def test_an_assertion_signed_with_another_key_is_authentication_failed() -> None:
    server = assertion_provider(_key("ec"))
    other = _pem(_key("ec"))

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            error = await verify_error(assertion_request(url, other, "ES256"))
        assert error.code == Reason.AUTHENTICATION_FAILED
        assert "invalid_client" in error.message
        assert server.api_auth_headers == []

    run(scenario())


@pytest.mark.parametrize(
    ("key_pem", "algorithm", "problem"),
    [
        (_pem(_key("ec")), "PS256", "is not an RSA key"),
        (_pem(_key("rsa")), "ES256", "is not an EC key"),
        (
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "PS256",
            "is not a PEM",
        ),
    ],
    ids=["ec-for-ps256", "rsa-for-es256", "not-a-key"],
)
def test_a_key_unfit_for_the_algorithm_is_config_invalid_before_any_request(
    key_pem: str, algorithm: str, problem: str
) -> None:
    async def scenario() -> None:
        async with serve({"/oauth/token": answer()}) as (url, seen):
            error = await verify_error(assertion_request(url, key_pem, algorithm))
        assert error.code == Reason.CONFIG_INVALID
        assert f"variable privateKey {problem}" in error.message
        assert "PRIVATE KEY" not in error.message
        assert seen.count == 0

    run(scenario())


# --- where the access token goes ----------------------------------------------------


def token_reader(server: OAuth2Server, read: Callable[[web.Request], str | None]) -> Handler:
    """An API that accepts the tokens the server issued, found where ``read`` looks."""

    async def api(request: web.Request) -> web.Response:
        if read(request) in server.issued:
            return web.json_response({"id": "me"})
        return web.json_response({"error": "invalid_token"}, status=401)

    return api


@pytest.mark.parametrize("prefix", [None, "Token "], ids=["as-is", "prefixed"])
def test_access_token_goes_in_the_header_the_connector_names(prefix: str | None) -> None:
    server = provider(refresh_token=f"rt-{uuid.uuid4().hex}")
    header = "x-amz-access-token"
    sent_before_token = prefix or ""

    def read(request: web.Request) -> str | None:
        return request.headers.get(header, "").removeprefix(sent_before_token)

    async def scenario() -> None:
        routes = {"/oauth/token": server.token, "/v1/me": token_reader(server, read)}
        async with serve(routes) as (url, seen):
            placement = {"in": "header", "name": header, "prefix": prefix}
            request = make_request(
                url,
                path="/v1/me",
                auth=refresh_token_grant(accessToken=placement),
                secrets=client_secrets(server, refreshToken=server.refresh_token),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        api_request = seen.requests[1]
        assert api_request.headers[header] == f"{sent_before_token}{server.issued[0]}"
        assert "Authorization" not in api_request.headers

    run(scenario())


def test_access_token_goes_in_the_query_parameter_the_connector_names() -> None:
    server = provider()

    def read(request: web.Request) -> str | None:
        return request.query.get("access_token") if request.query.get("version") == "2.0" else None

    async def scenario() -> None:
        routes = {"/oauth/token": server.token, "/login": token_reader(server, read)}
        async with serve(routes) as (url, seen):
            request = make_request(
                url,
                path="/login?version=2.0",
                auth=client_credentials(accessToken={"in": "query", "name": "access_token"}),
                secrets=client_secrets(server),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        token_request, api_request = seen.requests
        assert dict(api_request.query) == {"version": "2.0", "access_token": server.issued[0]}
        assert "Authorization" not in api_request.headers
        assert "access_token" not in token_request.query

    run(scenario())


def test_access_token_in_the_query_is_scrubbed_and_not_carried_to_another_host() -> None:
    server = provider()

    async def echo_url(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"cannot serve {request.url}")

    async def scenario() -> None:
        async with serve({"/landing": echo_url}, host="127.0.0.2") as (other_url, other_seen):
            redirect = answer(307, headers={"Location": f"{other_url}/landing"})
            routes = {"/oauth/token": server.token, "/start": redirect, "/echo": echo_url}
            async with serve(routes) as (url, seen):
                errors = []
                for path in ("/start", "/echo"):
                    request = make_request(
                        url,
                        path=path,
                        auth=client_credentials(accessToken={"in": "query", "name": "token"}),
                        secrets=client_secrets(server),
                    )
                    errors.append(await verify_error(request))
        assert [error.code for error in errors] == [Reason.PROVIDER_ERROR] * 2
        assert seen.requests[1].query["token"] == server.issued[0]
        assert "token" not in other_seen.requests[0].query
        assert "cannot serve" in errors[1].message
        for error in errors:
            for token in server.issued:
                assert token not in error.message

    run(scenario())


# --- what the token endpoint answers ---------------------------------------------


def test_token_endpoint_429_is_rate_limited_with_its_retry_after() -> None:
    server = provider(retry_after="30")

    async def scenario() -> None:
        async with serve(server.routes()) as (url, _):
            request = me_request(url, server)
            error = await verify_error(request)
        assert error.code == Reason.RATE_LIMITED
        assert error.retryable is True
        assert error.retry_after == 30
        assert server.api_auth_headers == []

    run(scenario())


@pytest.mark.parametrize(
    ("token_endpoint", "code", "said"),
    [
        (answer(503, "upstream down"), Reason.PROVIDER_ERROR, "HTTP 503"),
        (
            answer(200, "<html>login</html>", {"Content-Type": "text/html"}),
            Reason.PROTOCOL_ERROR,
            "not a JSON object",
        ),
        (answer(400, "bad request"), Reason.PROTOCOL_ERROR, "not an OAuth 2.0 error response"),
        (
            answer(200, '{"token_type": "Bearer"}', {"Content-Type": "application/json"}),
            Reason.PROTOCOL_ERROR,
            "no usable access_token",
        ),
        (
            answer(200, '{"access_token": "x", "token_type": "mac"}'),
            Reason.PROTOCOL_ERROR,
            "only Bearer",
        ),
        (answer(404, "not here"), Reason.RESOURCE_NOT_FOUND, "no token endpoint"),
        (
            answer(400, '{"error": "invalid_client_id", "error_description": "client identifier"}'),
            Reason.AUTHENTICATION_FAILED,
            "the client id is not known (HTTP 400 invalid_client_id: client identifier)",
        ),
    ],
    ids=["503", "html", "400-not-json", "no-access-token", "mac-token", "404", "unknown-client-id"],
)
def test_token_endpoint_answer_maps_to_reason(
    token_endpoint: Handler, code: Reason, said: str
) -> None:
    async def scenario() -> None:
        async with serve({"/oauth/token": token_endpoint, "/v1/me": answer()}) as (url, seen):
            request = make_request(
                url,
                path="/v1/me",
                auth=client_credentials(),
                secrets={"clientId": CLIENT_ID, "clientSecret": "cs-1234"},
            )
            error = await verify_error(request)
        assert error.code == code
        assert said in error.message
        assert [r.path for r in seen.requests] == ["/oauth/token"]

    run(scenario())


def test_token_endpoint_redirect_is_not_followed() -> None:
    async def scenario() -> None:
        async with serve({"/elsewhere": answer()}, host="127.0.0.2") as (other, other_seen):
            redirect = answer(307, headers={"Location": f"{other}/elsewhere"})
            async with serve({"/oauth/token": redirect}) as (url, _):
                request = make_request(
                    url,
                    auth=client_credentials(),
                    secrets={"clientId": CLIENT_ID, "clientSecret": "cs-1234"},
                )
                error = await verify_error(request)
        assert error.code == Reason.PROTOCOL_ERROR
        assert "redirect" in error.message
        assert other_seen.count == 0

    run(scenario())


def test_a_token_endpoint_redirect_is_followed_within_the_connectors_hosts_when_asked() -> None:
    server = provider()

    async def scenario() -> None:
        routes = server.routes()
        async with serve(routes, host="127.0.0.2") as (data_centre, _):
            redirect = answer(307, headers={"Location": f"{data_centre}/oauth/token"})
            async with serve({**routes, "/oauth/token": redirect}) as (url, _):
                request = make_request(
                    url,
                    path="/v1/me",
                    auth=client_credentials(followRedirects=True),
                    secrets={"clientId": server.client_id, "clientSecret": server.client_secret},
                )
                assert (await verify(request)).code == Reason.VERIFIED
                # the connector's hosts bound where the grant may be resent
                only_here = ConnectorEgress(
                    OPEN_POLICY, ("localhost",), parse_networks(["127.0.0.1"])
                )
                error = await verify_error(request, only_here)
        assert len(server.token_forms) == 1  # the redirected grant reached the data centre once
        assert error.code == Reason.EGRESS_DENIED
        assert "127.0.0.2" in error.message

    run(scenario())


def test_following_token_redirects_needs_the_connectors_hosts() -> None:
    oauth2 = {"tokenUrl": "/oauth/token", "followRedirects": True}
    with pytest.raises(ValueError, match=r"followRedirects needs egress\.hosts"):
        ConnectorSpec.model_validate(
            {"driver": "http", "auth": {"type": "oauth2ClientCredentials", "oauth2": oauth2}}
        )
    ConnectorSpec.model_validate(
        {
            "driver": "http",
            "auth": {"type": "oauth2ClientCredentials", "oauth2": oauth2},
            "egress": {"hosts": ["*.bullhornstaffing.com"]},
        }
    )


# --- where the token endpoint is -------------------------------------------------


@pytest.mark.parametrize(
    "token_url",
    ["{loginUrl}/{tenant}/oauth2/token", "http://127.0.0.2:{loginPort}/{tenant}/oauth2/token"],
    ids=["url-variable", "absolute-url"],
)
def test_token_url_template_is_filled_from_config(token_url: str) -> None:
    server = provider()

    async def scenario() -> None:
        login_routes = {"/{tenant}/oauth2/token": server.token}
        async with (
            serve(login_routes, host="127.0.0.2") as (login_url, login_seen),
            serve({"/v1/me": server.api}) as (url, _),
        ):
            request = me_request(
                url,
                server,
                client_credentials(token_url),
                config={
                    "loginUrl": login_url + "/",
                    "loginPort": int(login_url.rsplit(":", 1)[1]),
                    "tenant": "contoso tenant",
                },
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert login_seen.requests[0].raw_path == "/contoso%20tenant/oauth2/token"

    run(scenario())


def test_token_url_naming_a_secret_variable_is_config_invalid() -> None:
    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, seen):
            request = make_request(
                url,
                auth=client_credentials("/token/{clientSecret}"),
                secrets={"clientId": CLIENT_ID, "clientSecret": "cs-never-in-a-url"},
            )
            error = await verify_error(request)
        assert error.code == Reason.CONFIG_INVALID
        assert "{clientSecret}" in error.message
        assert "cs-never-in-a-url" not in error.message
        assert seen.count == 0

    run(scenario())


def test_token_endpoint_on_a_denied_host_is_egress_denied_before_any_request() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))
    server = provider()

    async def scenario() -> None:
        async with (
            serve({"/token": server.token}, host="127.0.0.2") as (login_url, login_seen),
            serve({"/v1/me": server.api}) as (url, _),
        ):
            request = me_request(url, server, client_credentials(f"{login_url}/token"))
            error = await verify_error(request, policy)
        assert error.code == Reason.EGRESS_DENIED
        assert login_seen.count == 0
        assert server.api_auth_headers == []

    run(scenario())


# --- TLS -----------------------------------------------------------------------------


def test_token_endpoint_and_api_over_https_are_verified_with_the_connections_ca() -> None:
    ca = CertificateAuthority("private-ca")
    server = provider()

    async def scenario() -> None:
        async with serve(server.routes(), ssl_context=ca.server_context()) as (url, _):
            request = me_request(
                url,
                server,
                tls=TlsMaterial(ca_pem=ca.cert_pem),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert len(server.issued) == 1

    run(scenario())


def test_token_endpoint_with_a_certificate_from_another_ca_is_tls_error() -> None:
    trusted, other = CertificateAuthority("private-ca"), CertificateAuthority("other-ca")
    server = provider()

    async def scenario() -> None:
        async with serve(server.routes(), ssl_context=other.server_context()) as (url, seen):
            request = me_request(
                url,
                server,
                tls=TlsMaterial(ca_pem=trusted.cert_pem),
            )
            error = await verify_error(request)
        assert error.code == Reason.TLS_ERROR
        assert f"POST {url}/oauth/token" in error.message
        assert seen.count == 0

    run(scenario())
