"""The s3 driver against a real MinIO server on 127.0.0.1 (no Kubernetes needed).

A few answers MinIO cannot be made to give (SlowDown, a server that is not
S3) come from small aiohttp servers on loopback. Everything connects to
127.0.0.1, or 127.0.0.2 for the egress test, only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web

import locals3
from driver_calls import (
    OPEN_POLICY,
    DriverCalls,
    assert_error_keeps_no_secret,
    list_files,
    outcome_texts,
    read_object,
    run,
)
from http_server import (
    CertificateAuthority,
    Handler,
    answer,
    serve,
    serve_silence,
)
from localserver import free_port, stopping
from patchbay.api.connector import AuthSpec, CheckSpec
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy, parse_networks
from patchbay.core.verification import run_verification
from patchbay.drivers.base import (
    ConfigValue,
    DriverError,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
)
from patchbay.drivers.s3 import S3Driver

DRIVER = S3Driver()
CALLS = DriverCalls(DRIVER)
verify = CALLS.outcome
verify_error = CALLS.error
BUCKET = f"orders-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def s3(s3_server: locals3.S3Server) -> locals3.S3Server:
    """The shared server with this module's bucket and objects."""
    s3_server.create_bucket(BUCKET)
    for key, body in (
        ("incoming/2024/orders.csv", b"id\n1\n"),
        ("incoming/empty.csv", b""),
        ("private/salaries.csv", b"name,salary\n"),
        ("team-a/report.txt", b"ok"),
    ):
        s3_server.put_object(BUCKET, key, body)
    return s3_server


def make_request(
    endpoint: str,
    key: locals3.AccessKey,
    *,
    checks: tuple[CheckSpec, ...] = (),
    tls: TlsMaterial | None = None,
    **config: ConfigValue,
) -> VerifyRequest:
    secrets = {"accessKeyId": key.access_key_id, "secretAccessKey": key.secret_access_key}
    if key.session_token:
        secrets["sessionToken"] = key.session_token
    return VerifyRequest(
        config={"endpoint": endpoint, "bucket": BUCKET, "pathStyle": True, **config},
        secrets=secrets,
        auth=AuthSpec(type="awsAccessKey"),
        checks=checks,
        tls=tls,
    )


# --- login -------------------------------------------------------------------------------


def test_good_keys_verify_with_server_name_and_latency(s3: locals3.S3Server) -> None:
    outcome = verify(make_request(s3.endpoint, s3.root))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert outcome.server_version == "MinIO"
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0


def test_wrong_secret_key_is_authentication_failed_and_not_retryable(
    s3: locals3.S3Server,
) -> None:
    key = locals3.AccessKey(s3.root.access_key_id, "not-the-secret-key")
    error = verify_error(make_request(s3.endpoint, key))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert not error.retryable
    assert "SignatureDoesNotMatch" in error.message


def test_unknown_access_key_is_authentication_failed(s3: locals3.S3Server) -> None:
    key = locals3.AccessKey("nobody-" + uuid.uuid4().hex[:8], s3.root.secret_access_key)
    error = verify_error(make_request(s3.endpoint, key))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert "InvalidAccessKeyId" in error.message


def test_temporary_keys_without_their_session_token_are_authentication_failed(
    s3: locals3.S3Server,
) -> None:
    temporary = s3.assume_role(locals3.bucket_policy(BUCKET))
    assert verify(make_request(s3.endpoint, temporary)).code == Reason.VERIFIED
    without_token = locals3.AccessKey(temporary.access_key_id, temporary.secret_access_key)
    error = verify_error(make_request(s3.endpoint, without_token))
    assert error.code == Reason.AUTHENTICATION_FAILED


def test_missing_bucket_is_resource_not_found_naming_it(s3: locals3.S3Server) -> None:
    error = verify_error(make_request(s3.endpoint, s3.root, bucket="no-such-bucket"))
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert "s3://no-such-bucket/" in error.message
    assert "NoSuchBucket" in error.message


def test_keys_without_any_right_on_the_bucket_are_permission_denied(
    s3: locals3.S3Server,
) -> None:
    other_bucket_only = s3.assume_role(locals3.bucket_policy("some-other-bucket"))
    error = verify_error(make_request(s3.endpoint, other_bucket_only))
    assert error.code == Reason.PERMISSION_DENIED
    assert not error.retryable
    assert "AccessDenied" in error.message


def test_prefix_is_where_the_connection_lists(s3: locals3.S3Server) -> None:
    """Keys denied under private/ still verify a Connection whose prefix is elsewhere."""
    key = s3.assume_role(locals3.bucket_policy(BUCKET, deny_prefix="private/"))
    assert verify(make_request(s3.endpoint, key, prefix="incoming")).code == Reason.VERIFIED
    error = verify_error(make_request(s3.endpoint, key, prefix="private"))
    assert error.code == Reason.PERMISSION_DENIED


# --- checks ------------------------------------------------------------------------------


def test_list_and_read_checks_pass_on_existing_paths(s3: locals3.S3Server) -> None:
    checks = (
        list_files("/incoming"),
        list_files("incoming/2024/"),
        list_files("/"),
        read_object("/incoming/2024/orders.csv"),
        read_object("incoming/empty.csv"),
    )
    outcome = verify(make_request(s3.endpoint, s3.root, checks=checks))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert [(c.type, c.target, c.result) for c in outcome.checks] == [
        ("listFiles", "/incoming", "Succeeded"),
        ("listFiles", "incoming/2024/", "Succeeded"),
        ("listFiles", "/", "Succeeded"),
        ("readObject", "/incoming/2024/orders.csv", "Succeeded"),
        ("readObject", "incoming/empty.csv", "Succeeded"),
    ]


def test_missing_paths_are_resource_not_found(s3: locals3.S3Server) -> None:
    checks = (list_files("/outgoing"), read_object("/incoming/nope.csv"), list_files("/incoming"))
    outcome = verify(make_request(s3.endpoint, s3.root, checks=checks))
    assert (outcome.result, outcome.code) == ("Failed", Reason.RESOURCE_NOT_FOUND)
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Failed", Reason.RESOURCE_NOT_FOUND),
        ("Failed", Reason.RESOURCE_NOT_FOUND),
        ("Succeeded", Reason.VERIFIED),
    ]
    assert "s3://" + BUCKET + "/outgoing" in outcome.checks[0].message
    assert "NoSuchKey" in outcome.checks[1].message


def test_check_paths_are_relative_to_the_prefix(s3: locals3.S3Server) -> None:
    checks = (read_object("report.txt"), read_object("/incoming/2024/orders.csv"))
    outcome = verify(make_request(s3.endpoint, s3.root, checks=checks, prefix="/team-a/"))
    assert [c.code for c in outcome.checks] == [Reason.VERIFIED, Reason.RESOURCE_NOT_FOUND]


def test_policy_denying_a_prefix_is_permission_denied_on_list_and_read(
    s3: locals3.S3Server,
) -> None:
    key = s3.assume_role(locals3.bucket_policy(BUCKET, deny_prefix="private/"))
    checks = (
        list_files("/incoming"),
        read_object("/incoming/2024/orders.csv"),
        list_files("/private"),
        read_object("/private/salaries.csv"),
    )
    outcome = verify(make_request(s3.endpoint, key, checks=checks))
    assert (outcome.result, outcome.code) == ("Failed", Reason.PERMISSION_DENIED)
    assert not outcome.retryable
    assert [(c.target, c.result, c.code) for c in outcome.checks] == [
        ("/incoming", "Succeeded", Reason.VERIFIED),
        ("/incoming/2024/orders.csv", "Succeeded", Reason.VERIFIED),
        ("/private", "Failed", Reason.PERMISSION_DENIED),
        ("/private/salaries.csv", "Failed", Reason.PERMISSION_DENIED),
    ]


def test_other_check_types_and_empty_object_paths_are_config_invalid(
    s3: locals3.S3Server,
) -> None:
    checks = (CheckSpec(type="query", sql="select 1"), read_object("/"))
    outcome = verify(make_request(s3.endpoint, s3.root, checks=checks))
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Failed", Reason.CONFIG_INVALID),
        ("Failed", Reason.CONFIG_INVALID),
    ]
    assert outcome.checks[0].message == "check type query is not supported by the s3 driver"


# --- secrets -----------------------------------------------------------------------------


def test_canary_secret_key_appears_in_no_message(s3: locals3.S3Server) -> None:
    canary = f"canary-{uuid.uuid4()}"
    key = locals3.AccessKey(s3.root.access_key_id, canary)
    error = verify_error(make_request(s3.endpoint, key))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert_error_keeps_no_secret(error, canary)


def test_secret_key_appears_in_no_outcome_of_failing_checks(s3: locals3.S3Server) -> None:
    key = s3.assume_role(locals3.bucket_policy(BUCKET, deny_prefix="private/"))
    checks = (list_files("/private"), read_object("/private/salaries.csv"), read_object("/nope"))
    outcome = verify(make_request(s3.endpoint, key, checks=checks))
    assert outcome.code == Reason.PERMISSION_DENIED
    for text in outcome_texts(outcome):
        assert key.secret_access_key not in text
        assert key.session_token is not None and key.session_token not in text


# --- network -----------------------------------------------------------------------------


def test_closed_port_is_host_unreachable() -> None:
    key = locals3.AccessKey("key", "secret")
    error = verify_error(make_request(f"http://127.0.0.1:{free_port()}", key))
    assert error.code == Reason.HOST_UNREACHABLE
    assert error.retryable


def test_never_answering_listener_is_timeout_and_the_connection_is_closed() -> None:
    async def scenario() -> VerifyOutcome:
        async with serve_silence() as (url, closed):
            request = make_request(url, locals3.AccessKey("key", "secret"))
            outcome, _ = await run_verification(
                DRIVER, request, egress=OPEN_POLICY, timeout_seconds=1
            )
            await asyncio.wait_for(closed.wait(), timeout=10)
        return outcome

    outcome = run(scenario())
    assert (outcome.result, outcome.code) == ("Failed", Reason.TIMEOUT)


def test_egress_policy_denying_the_endpoint_address_sends_nothing() -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> tuple[DriverError, int]:
        async with serve({"/{tail:.*}": answer()}, host="127.0.0.2") as (url, seen):
            with pytest.raises(DriverError) as info:
                await DRIVER.verify(make_request(url, locals3.AccessKey("k", "s")), policy)
            return info.value, seen.count

    error, requests = run(scenario())
    assert error.code == Reason.EGRESS_DENIED
    assert requests == 0


def _s3_error(status: int, code: str, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = (
            f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>says {code}</Message></Error>"
        )
        return web.Response(
            status=status, text=body, content_type="application/xml", headers=headers
        )

    return handler


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (503, "SlowDown", Reason.RATE_LIMITED),
        (400, "RequestTimeTooSkewed", Reason.PROVIDER_ERROR),
        (500, "InternalError", Reason.PROVIDER_ERROR),
        (400, "AuthorizationHeaderMalformed", Reason.CONFIG_INVALID),
    ],
)
def test_s3_error_codes_map_to_reasons_and_are_quoted(
    status: int, code: str, reason: Reason
) -> None:
    async def scenario() -> DriverError:
        async with serve({"/{tail:.*}": _s3_error(status, code)}) as (url, _):
            with pytest.raises(DriverError) as info:
                await DRIVER.verify(make_request(url, locals3.AccessKey("k", "s")), OPEN_POLICY)
            return info.value

    error = run(scenario())
    assert error.code == reason
    assert f"{code}: says {code}" in error.message


def test_slow_down_with_retry_after_carries_it() -> None:
    async def scenario() -> DriverError:
        handler = _s3_error(503, "SlowDown", {"Retry-After": "7"})
        async with serve({"/{tail:.*}": handler}) as (url, _):
            with pytest.raises(DriverError) as info:
                await DRIVER.verify(make_request(url, locals3.AccessKey("k", "s")), OPEN_POLICY)
            return info.value

    error = run(scenario())
    assert (error.code, error.retry_after, error.retryable) == (Reason.RATE_LIMITED, 7.0, True)


def test_error_document_arriving_in_pieces_is_still_classified() -> None:
    async def in_pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=404, headers={"Content-Type": "application/xml"})
        await response.prepare(request)
        await response.write(b"<Error><Code>NoSuch")
        await asyncio.sleep(0.2)  # the first piece reaches the client on its own
        await response.write(b"Bucket</Code><Message>gone</Message></Error>")
        await response.write_eof()
        return response

    async def scenario() -> DriverError:
        async with serve({"/{tail:.*}": in_pieces}) as (url, _):
            with pytest.raises(DriverError) as info:
                await DRIVER.verify(make_request(url, locals3.AccessKey("k", "s")), OPEN_POLICY)
            return info.value

    error = run(scenario())
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert "NoSuchBucket: gone" in error.message


def test_server_that_is_not_s3_is_a_protocol_error() -> None:
    async def scenario() -> DriverError:
        async with serve({"/{tail:.*}": answer(200, "<html>hello</html>")}) as (url, _):
            with pytest.raises(DriverError) as info:
                await DRIVER.verify(make_request(url, locals3.AccessKey("k", "s")), OPEN_POLICY)
            return info.value

    assert run(scenario()).code == Reason.PROTOCOL_ERROR


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_s3(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[locals3.S3Server, str]]:
    """A second MinIO that serves HTTPS with a certificate from a private CA; yields it
    and the CA's PEM."""
    ca = CertificateAuthority("minio-ca")
    certificate = ca.issue_server()
    workdir = tmp_path_factory.mktemp("minio-tls")
    # The chain, so that the test tooling, which trusts what the server presents, finds the CA.
    chain = certificate.cert_pem + ca.cert_pem
    with stopping(locals3.start_s3(workdir / "server", tls=(chain, certificate.key_pem))) as server:
        server.create_bucket(BUCKET)
        yield server, ca.cert_pem


def test_https_endpoint_with_its_ca_verifies(tls_s3: tuple[locals3.S3Server, str]) -> None:
    server, ca = tls_s3
    outcome = verify(make_request(server.endpoint, server.root, tls=TlsMaterial(ca_pem=ca)))
    assert outcome.code == Reason.VERIFIED


def test_https_endpoint_with_an_unknown_certificate_is_tls_error(
    tls_s3: tuple[locals3.S3Server, str],
) -> None:
    server, _ = tls_s3
    error = verify_error(make_request(server.endpoint, server.root))
    assert error.code == Reason.TLS_ERROR
    other_ca = CertificateAuthority("other-ca").cert_pem
    error = verify_error(
        make_request(server.endpoint, server.root, tls=TlsMaterial(ca_pem=other_ca))
    )
    assert error.code == Reason.TLS_ERROR


# --- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"endpoint": "ftp://127.0.0.1/"},
        {"endpoint": "http://user:pw@127.0.0.1:9/"},
        {"endpoint": "http://127.0.0.1:9/?x=1"},
        {"bucket": "a/b"},
        {"bucket": ""},
        {"pathStyle": "sometimes"},
        {"region": "eu-west-1/../x"},
    ],
)
def test_invalid_config_is_config_invalid(config: dict[str, ConfigValue]) -> None:
    request = make_request("http://127.0.0.1:9", locals3.AccessKey("k", "s"))
    request = VerifyRequest(
        config={**request.config, **config},
        secrets=request.secrets,
        auth=request.auth,
    )
    assert verify_error(request).code == Reason.CONFIG_INVALID


def test_auth_type_other_than_aws_access_key_is_config_invalid() -> None:
    request = VerifyRequest(
        config={"endpoint": "http://127.0.0.1:9", "bucket": BUCKET},
        secrets={"password": "x"},
        auth=AuthSpec(type="password"),
    )
    error = verify_error(request)
    assert error.code == Reason.CONFIG_INVALID
    assert "awsAccessKey" in error.message
