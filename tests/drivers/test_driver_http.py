"""The http driver against real HTTP(S) servers on 127.0.0.1 and 127.0.0.2.

Every server is started by the test on a free loopback port; nothing here
connects anywhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import (
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from driver_calls import DriverCalls, run
from http_server import (
    CertificateAuthority,
    Handler,
    MutualTlsServer,
    answer,
    serve,
    serve_mutual_tls,
    serve_silence,
)
from localserver import free_port
from patchbay.api.connector import (
    AuthSpec,
    CheckSpec,
    CredentialPlacement,
    HttpErrorRule,
    HttpRequestSpec,
)
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy, parse_networks
from patchbay.drivers.base import ConfigValue, DriverError, TlsMaterial, VerifyRequest
from patchbay.drivers.http import HttpDriver, json_pointer, parse_retry_after


def make_request(
    base_url: str,
    *,
    auth: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    config: Mapping[str, ConfigValue] | None = None,
    path: str | None = "/",
    checks: Sequence[Mapping[str, Any]] = (),
    tls: TlsMaterial | None = None,
) -> VerifyRequest:
    return VerifyRequest(
        config={"baseUrl": base_url, **(config or {})},
        secrets=dict(secrets or {}),
        auth=AuthSpec.model_validate(auth or {"type": "none"}),
        checks=tuple(CheckSpec.model_validate(c) for c in checks),
        http=HttpRequestSpec(path=path) if path is not None else None,
        tls=tls,
    )


CALLS = DriverCalls(HttpDriver())
verify = CALLS.verify
verify_error = CALLS.failure


# --- success and authentication -------------------------------------------------


def test_no_auth_200_is_verified_with_server_header_as_version() -> None:
    async def scenario() -> None:
        routes = {"/": answer(headers={"Server": "inventory/2.4.1"})}
        async with serve(routes) as (url, seen):
            outcome = await verify(make_request(url, path=None))
        assert outcome.result == "Succeeded"
        assert outcome.code == Reason.VERIFIED
        assert outcome.server_version == "inventory/2.4.1"
        assert outcome.latency_ms is not None and outcome.latency_ms >= 0
        assert seen.count == 1
        assert seen.requests[0].headers["User-Agent"].startswith("patchbay/")

    run(scenario())


def _basic_server(seen_auth: list[str]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        seen_auth.append(header)
        # "alice:s3cret" in base64
        if header == "Basic YWxpY2U6czNjcmV0":
            return web.Response(text="hello alice")
        return web.Response(status=401, text="who are you")

    return handler


def test_basic_auth_with_good_credentials_is_verified() -> None:
    async def scenario() -> None:
        attempts: list[str] = []
        async with serve({"/me": _basic_server(attempts)}) as (url, _):
            request = make_request(
                url,
                path="/me",
                auth={"type": "basic"},
                secrets={"username": "alice", "password": "s3cret"},
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert attempts == ["Basic YWxpY2U6czNjcmV0"]

    run(scenario())


def test_basic_auth_with_bad_password_fails_authentication_after_one_request() -> None:
    async def scenario() -> None:
        attempts: list[str] = []
        async with serve({"/me": _basic_server(attempts)}) as (url, _):
            request = make_request(
                url,
                path="/me",
                auth={"type": "basic"},
                secrets={"username": "alice", "password": "wrong-password"},
            )
            error = await verify_error(request)
        assert error.code == Reason.AUTHENTICATION_FAILED
        assert error.retryable is False
        assert len(attempts) == 1
        assert "GET http://127.0.0.1:" in error.message
        assert "wrong-password" not in error.message

    run(scenario())


def test_bearer_token_is_sent_in_the_authorization_header() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ok = request.headers.get("Authorization") == "Bearer tok-123"
        return web.Response(status=200 if ok else 401)

    async def scenario() -> None:
        async with serve({"/": handler}) as (url, _):
            request = make_request(url, auth={"type": "bearer"}, secrets={"token": "tok-123"})
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED

    run(scenario())


def test_api_key_in_a_header_is_verified() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ok = request.headers.get("X-Api-Key") == "Token key-1"
        return web.Response(status=200 if ok else 401)

    async def scenario() -> None:
        async with serve({"/": handler}) as (url, _):
            request = make_request(
                url,
                auth={
                    "type": "apiKey",
                    "apiKey": {"in": "header", "name": "X-Api-Key", "prefix": "Token "},
                },
                secrets={"apiKey": "key-1"},
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED

    run(scenario())


def test_api_key_in_the_query_string_is_verified() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ok = request.query.get("api_key") == "key/with&odd=chars" and request.query["x"] == "1"
        return web.Response(status=200 if ok else 401)

    async def scenario() -> None:
        async with serve({"/search": handler}) as (url, _):
            request = make_request(
                url,
                path="/search?x=1",
                auth={"type": "apiKey", "apiKey": {"in": "query", "name": "api_key"}},
                secrets={"apiKey": "key/with&odd=chars"},
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED

    run(scenario())


@pytest.mark.parametrize(
    ("placement", "read"),
    [
        ({"in": "header", "name": "X-Api-Key"}, lambda r: r.headers.get("X-Api-Key")),
        ({"in": "query", "name": "api_key"}, lambda r: r.query.get("api_key")),
        (
            {"in": "header", "name": "Authorization", "prefix": "Token "},
            lambda r: r.headers.get("Authorization", "").removeprefix("Token "),
        ),
    ],
    ids=["header", "query", "prefix"],
)
def test_a_connections_own_placement_carries_the_bearer_token_where_it_says(
    placement: dict[str, str], read: Callable[[web.Request], str | None]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ok = read(request) == "tok-123" and "Bearer" not in request.headers.get("Authorization", "")
        return web.Response(status=200 if ok else 401)

    async def scenario() -> None:
        async with serve({"/v2/whoami": handler}) as (url, _):
            request = dataclasses.replace(
                make_request(url, auth={"type": "bearer"}, secrets={"token": "tok-123"}),
                http=HttpRequestSpec(path="/v2/whoami"),
                credential_placement=CredentialPlacement.model_validate(placement),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED

    run(scenario())


def test_an_endpoint_that_answers_without_credentials_too_is_credentials_not_required() -> None:
    async def scenario() -> None:
        async with serve({"/api/2.0/status": answer()}) as (url, seen):
            request = dataclasses.replace(
                make_request(url, auth={"type": "bearer"}, secrets={"token": "tok-123"}),
                http=HttpRequestSpec(path="/api/2.0/status", credentials_required=True),
            )
            outcome = await verify(request)
        assert outcome.result == "Succeeded"
        assert outcome.code == Reason.CREDENTIALS_NOT_REQUIRED
        assert "without credentials" in outcome.message
        authorizations = [r.headers.get("Authorization") for r in seen.requests]
        assert authorizations == [None, "Bearer tok-123"]

    run(scenario())


def test_an_endpoint_that_refuses_requests_without_credentials_is_verified() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ok = request.headers.get("Authorization") == "Bearer tok-123"
        return web.Response(status=200 if ok else 401)

    async def scenario() -> None:
        async with serve({"/api/2.0/status": handler}) as (url, seen):
            request = dataclasses.replace(
                make_request(url, auth={"type": "bearer"}, secrets={"token": "tok-123"}),
                http=HttpRequestSpec(path="/api/2.0/status", credentials_required=True),
            )
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert seen.count == 2

    run(scenario())


def test_missing_credential_is_secret_key_missing_naming_the_variable() -> None:
    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, seen):
            request = make_request(url, auth={"type": "bearer"}, secrets={})
            error = await verify_error(request)
        assert error.code == Reason.SECRET_KEY_MISSING
        assert "token" in error.message
        assert seen.count == 0

    run(scenario())


def test_unsupported_auth_type_is_config_invalid() -> None:
    async def scenario() -> None:
        request = make_request(
            "http://127.0.0.1:1",
            auth={"type": "sshKey"},
            secrets={"username": "alice", "privateKey": "not-for-http"},
        )
        error = await verify_error(request)
        assert error.code == Reason.CONFIG_INVALID
        assert "sshKey" in error.message

    run(scenario())


# --- status mapping ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (403, Reason.PERMISSION_DENIED, False),
        (404, Reason.RESOURCE_NOT_FOUND, True),
        (400, Reason.PROTOCOL_ERROR, True),
    ],
)
def test_error_status_maps_to_reason(status: int, code: Reason, retryable: bool) -> None:
    async def scenario() -> None:
        async with serve({"/x": answer(status)}) as (url, _):
            error = await verify_error(make_request(url, path="/x"))
        assert error.code == code
        assert error.retryable is retryable
        assert f"HTTP {status}" in error.message

    run(scenario())


GOOGLE_QUOTA = {
    "error": {
        "code": 403,
        "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}],
        "message": "User Rate Limit Exceeded",
    }
}
RULES = [
    {
        "status": [403],
        "pointer": "/error/errors/0/reason",
        "values": ["rateLimitExceeded", "userRateLimitExceeded"],
        "reason": "RateLimited",
    },
    {"status": [402, 423], "reason": "PermissionDenied"},
]


def ruled_request(url: str) -> VerifyRequest:
    request = make_request(url, path="/x")
    rules = tuple(HttpErrorRule.model_validate(rule) for rule in RULES)
    return dataclasses.replace(request, http_errors=rules)


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (403, GOOGLE_QUOTA, Reason.RATE_LIMITED),
        (
            403,
            {"error": {"errors": [{"reason": "insufficientPermissions"}]}},
            Reason.PERMISSION_DENIED,
        ),
        (403, {"unexpected": "shape"}, Reason.PERMISSION_DENIED),
        (402, {"errors": "Unavailable Shop"}, Reason.PERMISSION_DENIED),
        (423, None, Reason.PERMISSION_DENIED),
        (404, GOOGLE_QUOTA, Reason.RESOURCE_NOT_FOUND),
    ],
    ids=["quota-named", "other-reason", "other-shape", "status-rule", "no-body", "no-rule"],
)
def test_a_connectors_error_rules_read_the_body_before_the_status_decides(
    status: int, body: object, code: Reason
) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        headers = {"Retry-After": "7"}
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async def scenario() -> None:
        async with serve({"/x": reply}) as (url, _):
            error = await verify_error(ruled_request(url))
        assert error.code == code
        if code == Reason.RATE_LIMITED:
            assert error.retry_after == 7 and error.retryable
            assert "'userRateLimitExceeded'" in error.message

    run(scenario())


def test_json_pointer_follows_rfc_6901() -> None:
    document = {"a/b": {"~k": [{"x": "found"}]}, "error": {".tag": "missing_scope"}}
    assert json_pointer(document, "/a~1b/~0k/0/x") == "found"
    assert json_pointer(document, "/error/.tag") == "missing_scope"
    assert json_pointer(document, "/a~1b/~0k/1/x") is None
    assert json_pointer(document, "/nothing/here") is None
    assert json_pointer([1, 2], "/-1") is None


def test_429_with_retry_after_is_rate_limited_with_retry_after() -> None:
    async def scenario() -> None:
        async with serve({"/": answer(429, headers={"Retry-After": "30"})}) as (url, _):
            error = await verify_error(make_request(url))
        assert error.code == Reason.RATE_LIMITED
        assert error.retryable is True
        assert error.retry_after == 30

    run(scenario())


def test_retry_after_accepts_an_http_date_and_fractional_seconds() -> None:
    now = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    assert parse_retry_after("2.0", now=now) == 2.0
    assert parse_retry_after(" 0.5 ", now=now) == 0.5
    assert parse_retry_after("1e3", now=now) is None
    assert parse_retry_after("-1", now=now) is None
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:30 GMT", now=now) == 90
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None


def test_503_is_a_retryable_provider_error_with_a_body_snippet() -> None:
    async def scenario() -> None:
        body = "maintenance window " + "x" * 500
        async with serve({"/": answer(503, text=body)}) as (url, _):
            error = await verify_error(make_request(url))
        assert error.code == Reason.PROVIDER_ERROR
        assert error.retryable is True
        assert "HTTP 503 from server" in error.message
        assert "maintenance window" in error.message
        assert "x" * 201 not in error.message

    run(scenario())


def test_path_placeholder_is_filled_from_config() -> None:
    async def scenario() -> None:
        async with serve({"/v1/me": answer()}) as (url, seen):
            request = make_request(url, path="/{apiVersion}/me", config={"apiVersion": "v1"})
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert seen.requests[0].path == "/v1/me"

    run(scenario())


def test_path_placeholder_naming_an_unknown_variable_is_config_invalid() -> None:
    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, seen):
            error = await verify_error(make_request(url, path="/{nope}/me"))
        assert error.code == Reason.CONFIG_INVALID
        assert "nope" in error.message
        assert seen.count == 0

    run(scenario())


# --- network, TLS, timeouts -------------------------------------------------------


def test_closed_port_is_host_unreachable() -> None:
    async def scenario() -> None:
        error = await verify_error(make_request(f"http://127.0.0.1:{free_port()}"))
        assert error.code == Reason.HOST_UNREACHABLE
        assert error.retryable is True

    run(scenario())


def test_garbage_response_is_a_protocol_error() -> None:
    async def scenario() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"this is not http\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            error = await verify_error(make_request(f"http://127.0.0.1:{port}"))
        finally:
            server.close()
            await server.wait_closed()
        assert error.code == Reason.PROTOCOL_ERROR

    run(scenario())


def test_server_certificate_from_an_unknown_ca_is_tls_error() -> None:
    server_context = CertificateAuthority("private-ca").server_context()

    async def scenario() -> None:
        async with serve({"/": answer()}, ssl_context=server_context) as (url, seen):
            error = await verify_error(make_request(url))
        assert error.code == Reason.TLS_ERROR
        assert seen.count == 0

    run(scenario())


def test_server_certificate_from_the_connections_ca_is_verified() -> None:
    ca = CertificateAuthority("private-ca")

    async def scenario() -> None:
        async with serve({"/": answer()}, ssl_context=ca.server_context()) as (url, _):
            request = make_request(url, tls=TlsMaterial(ca_pem=ca.cert_pem))
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED

    run(scenario())


@pytest.fixture
def mutual_tls() -> Iterator[tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer]]:
    """An HTTPS server with a certificate from server_ca that requires a client
    certificate from client_ca."""
    server_ca, client_ca = CertificateAuthority("server-ca"), CertificateAuthority("client-ca")
    with serve_mutual_tls(server_ca, client_ca) as server:
        yield server_ca, client_ca, server


def client_tls(server_ca: CertificateAuthority, client_ca: CertificateAuthority) -> TlsMaterial:
    """Trusts ``server_ca`` and presents the certificate ``client_ca`` issued to billing-client."""
    client = client_ca.issue_client("billing-client")
    return TlsMaterial(
        ca_pem=server_ca.cert_pem, client_cert_pem=client.cert_pem, client_key_pem=client.key_pem
    )


def test_client_certificate_from_the_tls_secret_is_accepted(
    mutual_tls: tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer],
) -> None:
    server_ca, client_ca, server = mutual_tls
    tls = client_tls(server_ca, client_ca)
    request = make_request(server.base_url, auth={"type": "tlsClientCert"}, tls=tls)
    outcome = run(verify(request))
    assert outcome.code == Reason.VERIFIED
    assert server.clients == ["billing-client"]


def test_client_certificate_from_credential_variables_is_accepted(
    mutual_tls: tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer],
) -> None:
    server_ca, client_ca, server = mutual_tls
    client = client_ca.issue_client("billing-client")
    request = make_request(
        server.base_url,
        auth={"type": "tlsClientCert"},
        secrets={"clientCert": client.cert_pem, "clientKey": client.key_pem},
        tls=TlsMaterial(ca_pem=server_ca.cert_pem),
    )
    outcome = run(verify(request))
    assert outcome.code == Reason.VERIFIED
    assert server.clients == ["billing-client"]


@pytest.mark.parametrize("client_cert", ["none", "from-another-ca"])
def test_server_refusing_the_client_certificate_is_authentication_failed(
    mutual_tls: tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer],
    client_cert: str,
) -> None:
    server_ca, _, server = mutual_tls
    tls = TlsMaterial(ca_pem=server_ca.cert_pem)
    if client_cert == "from-another-ca":
        stranger = CertificateAuthority("stranger-ca").issue_client("billing-client")
        tls = replace(tls, client_cert_pem=stranger.cert_pem, client_key_pem=stranger.key_pem)
    error = run(verify_error(make_request(server.base_url, tls=tls)))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert error.retryable is False
    assert "client certificate" in error.message
    assert server.clients == []


def test_redirect_to_another_host_does_not_present_the_client_certificate(
    mutual_tls: tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer],
) -> None:
    server_ca, client_ca, server = mutual_tls
    tls = client_tls(server_ca, client_ca)

    async def scenario() -> None:
        redirect = answer(307, headers={"Location": f"{server.base_url}/landing"})
        context = server_ca.server_context()
        async with serve({"/": redirect}, host="127.0.0.2", ssl_context=context) as (url, seen):
            request = make_request(url, auth={"type": "tlsClientCert"}, tls=tls)
            error = await verify_error(request)
        assert seen.count == 1
        assert error.code == Reason.AUTHENTICATION_FAILED
        assert "redirected to GET https://127.0.0.1:" in error.message

    run(scenario())
    assert server.clients == []


def test_tls_client_cert_auth_without_a_certificate_is_config_invalid(
    mutual_tls: tuple[CertificateAuthority, CertificateAuthority, MutualTlsServer],
) -> None:
    server_ca, _, server = mutual_tls
    request = make_request(
        server.base_url, auth={"type": "tlsClientCert"}, tls=TlsMaterial(ca_pem=server_ca.cert_pem)
    )
    error = run(verify_error(request))
    assert error.code == Reason.CONFIG_INVALID
    assert "clientCertSecretRef" in error.message


def test_server_that_never_answers_times_out_under_the_callers_timeout() -> None:
    async def scenario() -> None:
        async with serve_silence() as (url, connection_closed):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(verify(make_request(url)), timeout=0.5)
            # Cancellation closed the session and with it the connection.
            await asyncio.wait_for(connection_closed.wait(), timeout=10)

    run(scenario())


# --- egress -----------------------------------------------------------------------


def test_denied_ip_literal_is_egress_denied_before_any_request() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> None:
        async with serve({"/": answer()}, host="127.0.0.2") as (url, seen):
            assert url.startswith("http://127.0.0.2:")
            error = await verify_error(make_request(url), policy)
        assert error.code == Reason.EGRESS_DENIED
        assert error.retryable is False
        assert seen.count == 0

    run(scenario())


def test_host_name_resolving_to_a_denied_address_is_egress_denied() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.0/8", "::1/128"]))

    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, seen):
            port = url.rsplit(":", 1)[1]
            error = await verify_error(make_request(f"http://localhost:{port}"), policy)
        assert error.code == Reason.EGRESS_DENIED
        assert seen.count == 0

    run(scenario())


@pytest.mark.parametrize("host", ["2130706433", "127.1", "017700000001", "0x7f.1", "0177.0.0.1"])
def test_loopback_written_in_a_legacy_ipv4_form_is_egress_denied_before_any_request(
    host: str,
) -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.0/8", "::1/128"]))

    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, seen):
            port = url.rsplit(":", 1)[1]
            error = await verify_error(make_request(f"http://{host}:{port}"), policy)
        assert error.code == Reason.EGRESS_DENIED
        assert "127.0.0.1" in error.message
        assert seen.count == 0

    run(scenario())


def test_redirect_to_a_denied_host_is_egress_denied() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> None:
        async with serve({"/": answer()}, host="127.0.0.2") as (denied_url, denied_seen):
            redirect = answer(302, headers={"Location": f"{denied_url}/"})
            async with serve({"/start": redirect}) as (url, seen):
                error = await verify_error(make_request(url, path="/start"), policy)
        assert error.code == Reason.EGRESS_DENIED
        assert seen.count == 1
        assert denied_seen.count == 0

    run(scenario())


def test_redirect_to_another_host_does_not_carry_the_credentials() -> None:
    async def scenario() -> None:
        async with serve({"/landing": answer()}, host="127.0.0.2") as (other_url, other_seen):
            redirect = answer(307, headers={"Location": f"{other_url}/landing"})
            async with serve({"/start": redirect}) as (url, seen):
                request = make_request(
                    url, path="/start", auth={"type": "bearer"}, secrets={"token": "tok-9"}
                )
                outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert seen.requests[0].headers["Authorization"] == "Bearer tok-9"
        assert "Authorization" not in other_seen.requests[0].headers

    run(scenario())


# --- checks -----------------------------------------------------------------------


def test_http_check_answered_403_makes_the_verification_permission_denied() -> None:
    async def scenario() -> None:
        routes = {"/me": answer(), "/admin": answer(403)}
        async with serve(routes) as (url, _):
            request = make_request(
                url,
                path="/me",
                checks=[{"type": "http", "http": {"path": "/admin"}}],
            )
            outcome = await verify(request)
        assert outcome.result == "Failed"
        assert outcome.code == Reason.PERMISSION_DENIED
        assert outcome.retryable is False
        assert outcome.checks[0].code == Reason.PERMISSION_DENIED
        assert outcome.checks[0].target == "GET /admin"
        assert outcome.checks[0].result == "Failed"

    run(scenario())


def test_http_check_server_error_fails_retryably_and_later_checks_run() -> None:
    async def scenario() -> None:
        routes = {"/me": answer(), "/report": answer(502, text="bad gateway"), "/ok": answer()}
        async with serve(routes) as (url, _):
            request = make_request(
                url,
                path="/me",
                checks=[
                    {"type": "http", "http": {"path": "/report"}},
                    {"type": "http", "http": {"path": "/ok"}},
                ],
            )
            outcome = await verify(request)
        # A server error is an answer: Failed, like a database's internal error, not Unknown.
        assert (outcome.result, outcome.code, outcome.retryable) == (
            "Failed",
            Reason.PROVIDER_ERROR,
            True,
        )
        assert [(c.result, c.code) for c in outcome.checks] == [
            ("Failed", Reason.PROVIDER_ERROR),
            ("Succeeded", Reason.VERIFIED),
        ]
        assert "HTTP 502 from server: bad gateway" in outcome.checks[0].message

    run(scenario())


def test_non_http_check_is_config_invalid() -> None:
    async def scenario() -> None:
        async with serve({"/": answer()}) as (url, _):
            request = make_request(url, checks=[{"type": "query", "sql": "select 1"}])
            outcome = await verify(request)
        assert outcome.code == Reason.CONFIG_INVALID
        assert outcome.checks[0].result == "Failed"
        assert "not supported by the http driver" in outcome.checks[0].message

    run(scenario())


# --- secrets never leak -----------------------------------------------------------


def _echo(status: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = f"cannot serve {request.url} (headers: {dict(request.headers)})"
        return web.Response(status=status, text=body)

    return handler


def test_api_key_in_the_query_never_appears_in_messages() -> None:
    canary = f"canary-{uuid.uuid4()}"

    async def scenario() -> None:
        routes = {"/ok": answer(), "/auth": _echo(401), "/boom": _echo(500)}
        texts: list[str] = []
        async with serve(routes) as (url, seen):
            for path, checks in (
                ("/auth", []),
                ("/boom", []),
                ("/ok", [{"type": "http", "http": {"path": "/boom"}}]),
            ):
                request = make_request(
                    url,
                    path=path,
                    auth={"type": "apiKey", "apiKey": {"in": "query", "name": "api_key"}},
                    secrets={"apiKey": canary},
                    checks=checks,
                )
                try:
                    outcome = await verify(request)
                except DriverError as error:
                    texts += [str(error), repr(error), error.message, repr(error.args)]
                else:
                    texts += [repr(outcome), outcome.message]
                    texts += [c.message for c in outcome.checks]
        # The key really was sent, and the servers really echoed it.
        assert all(r.query.get("api_key") == canary for r in seen.requests)
        assert seen.count == 4
        assert any("HTTP 500 from server" in t for t in texts)
        for text in texts:
            assert canary not in text
            assert canary[7:] not in text

    run(scenario())


def test_post_without_a_body_declares_no_content_type() -> None:
    async def scenario() -> None:
        async with serve({"/rpc": answer()}) as (url, seen):
            request = replace(make_request(url), http=HttpRequestSpec(method="POST", path="/rpc"))
            outcome = await verify(request)
        assert outcome.code == Reason.VERIFIED
        assert seen.requests[0].method == "POST"
        assert "Content-Type" not in seen.requests[0].headers

    run(scenario())
