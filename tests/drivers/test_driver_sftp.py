"""The sftp driver against a real local OpenSSH server (no Kubernetes needed).

Everything connects to 127.0.0.1 (or 127.0.0.2 for the egress test) only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.asn1 import der_decode, der_encode

import localsshd
from driver_calls import (
    OPEN_POLICY,
    DriverCalls,
    assert_error_keeps_no_secret,
    list_files,
    outcome_texts,
    read_object,
    run,
)
from fake_tcp import FakeTcpServer
from localserver import free_port
from patchbay.api.connector import AuthSpec, CheckSpec
from patchbay.api.reasons import Reason
from patchbay.core.egress import EgressPolicy, parse_networks
from patchbay.core.verification import run_verification
from patchbay.drivers.base import DriverError, VerifyOutcome, VerifyRequest
from patchbay.drivers.sftp import MAX_BCRYPT_ROUNDS, MAX_PBKDF2_ITERATIONS, SftpDriver

DRIVER = SftpDriver()
CALLS = DriverCalls(DRIVER)
verify = CALLS.outcome
verify_error = CALLS.error
verify_async = CALLS.verify
TREE = "driver-tests"
REPORT = b"id,total\n1,10\n2,20\n"


@pytest.fixture(scope="module")
def tree(sshd: localsshd.SshServer) -> Iterator[Path]:
    """Files in the test user's home: readable ones, and ones only root may read."""
    root = sshd.home / TREE
    user = pwd.getpwnam(sshd.username)
    (root / "incoming").mkdir(parents=True)
    (root / "incoming" / "report.csv").write_bytes(REPORT)
    (root / "empty").mkdir()
    (root / "locked").mkdir(mode=0o700)  # root's: the user may not list it
    (root / "locked" / "inside.txt").write_text("x")
    (root / "secret.txt").write_text("root only")
    (root / "secret.txt").chmod(0o600)
    os.mkfifo(root / "pipe")  # opening it for reading blocks the server until a writer comes
    for path in (root, root / "incoming", root / "incoming" / "report.csv", root / "empty"):
        os.chown(path, user.pw_uid, user.pw_gid)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client_key(sshd: localsshd.SshServer) -> str:
    private, public = localsshd.generate_key()
    sshd.authorize_key(public)
    return private


def make_request(
    sshd: localsshd.SshServer,
    *,
    checks: tuple[CheckSpec, ...] = (),
    password: str | None = None,
    secrets: dict[str, str] | None = None,
    auth: str = "password",
    **config: str | int,
) -> VerifyRequest:
    values: dict[str, str | int] = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "username": sshd.username,
    }
    values.update(config)
    # The server's key, pinned for whichever host and port the request names.
    values.setdefault("knownHosts", f"[{values['host']}]:{values['port']} {sshd.host_public_key}")
    if secrets is None:
        secrets = {"password": sshd.password if password is None else password}
    return VerifyRequest(
        config=values,
        secrets=secrets,
        auth=AuthSpec.model_validate({"type": auth}),
        checks=checks,
    )


def key_request(
    sshd: localsshd.SshServer, private_key: str, passphrase: str | None = None, **kwargs: Any
) -> VerifyRequest:
    """A request that logs in with ``private_key``, decrypted with ``passphrase`` if given."""
    secrets = {"privateKey": private_key}
    if passphrase is not None:
        secrets["passphrase"] = passphrase
    return make_request(sshd, auth="sshKey", secrets=secrets, **kwargs)


def connection_ends(sshd: localsshd.SshServer) -> int:
    """Connections sshd has seen end, whether they logged in or not."""
    return sum(
        sshd.log_count(marker)
        for marker in ("Connection closed by ", "Disconnected from ", "Received disconnect from ")
    )


def after_connection_ends(sshd: localsshd.SshServer, before: int) -> None:
    """Wait until sshd has logged the end of a connection, so its log of it is complete."""
    deadline = time.monotonic() + 10
    while connection_ends(sshd) <= before:
        assert time.monotonic() < deadline, "sshd never logged the end of the connection"
        time.sleep(0.05)


class Listener(FakeTcpServer):
    """Answers each client with ``reply`` and hangs up (after reading what the client sent
    first, if ``read_first``), or, without a reply, never says anything."""

    def __init__(
        self, host: str = "127.0.0.1", reply: bytes | None = None, read_first: bool = False
    ) -> None:
        super().__init__(host)
        self.reply = reply
        self.read_first = read_first

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reply is not None:
            if self.read_first:
                await reader.read(4096)
            writer.write(self.reply)
            await writer.drain()
        else:
            while await reader.read(4096):
                pass  # swallow the client's banner; wait for it to hang up


# --- logging in ---------------------------------------------------------------------------


def test_password_login_verifies_with_server_version_and_latency(
    sshd: localsshd.SshServer,
) -> None:
    outcome = verify(make_request(sshd))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert outcome.server_version is not None
    assert outcome.server_version.startswith("OpenSSH_")
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0


def test_key_login_verifies(sshd: localsshd.SshServer, client_key: str) -> None:
    outcome = verify(key_request(sshd, client_key))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)


@pytest.mark.parametrize("key_format", ["openssh", "pkcs8-pem"])
def test_encrypted_key_logs_in_with_its_passphrase(
    sshd: localsshd.SshServer, key_format: str
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    sshd.authorize_key(key.export_public_key().decode())
    encrypted = key.export_private_key(key_format, passphrase="open sesame").decode()
    assert verify(key_request(sshd, encrypted, "open sesame")).code == Reason.VERIFIED


def test_key_that_cannot_be_loaded_is_config_invalid(sshd: localsshd.SshServer) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    encrypted = key.export_private_key("openssh", passphrase="right").decode()
    cases = {
        "privateKey is encrypted: the credentials need a passphrase": {"privateKey": encrypted},
        "privateKey cannot be decrypted with the given passphrase": {
            "privateKey": encrypted,
            "passphrase": "wrong",
        },
        "privateKey is not a valid private key": {"privateKey": "not a key"},
    }
    for message, secrets in cases.items():
        error = verify_error(make_request(sshd, auth="sshKey", secrets=secrets))
        assert (error.code, error.message) == (Reason.CONFIG_INVALID, message)


def _pem_parts(pem: str) -> tuple[str, bytes, str]:
    lines = pem.strip().splitlines()
    return lines[0], base64.b64decode("".join(lines[1:-1])), lines[-1]


def _pem(begin: str, data: bytes, end: str) -> str:
    return f"{begin}\n{base64.encodebytes(data).decode()}{end}\n"


def with_bcrypt_rounds(pem: str, rounds: int) -> str:
    """An encrypted OpenSSH key whose KDF options name another round count, nothing else changed."""
    begin, data, end = _pem_parts(pem)
    offset = len(b"openssh-key-v1\0")
    for _ in range(2):  # cipher name, KDF name
        offset += 4 + int.from_bytes(data[offset : offset + 4], "big")
    offset += 4  # the length of the KDF options, then salt and rounds
    offset += 4 + int.from_bytes(data[offset : offset + 4], "big")
    patched = data[:offset] + rounds.to_bytes(4, "big") + data[offset + 4 :]
    return _pem(begin, patched, end)


def with_pbkdf2_iterations(pem: str, iterations: int) -> str:
    """An encrypted PKCS#8 key whose PBKDF2 parameters name another iteration count."""
    begin, data, end = _pem_parts(pem)
    info: Any = der_decode(data)
    (scheme, ((kdf, (salt, _, *rest)), cipher)), encrypted = info
    patched = der_encode(((scheme, ((kdf, (salt, iterations, *rest)), cipher)), encrypted))
    return _pem(begin, patched, end)


def assert_key_refused(
    sshd: localsshd.SshServer, private_key: str, passphrase: str, message: str
) -> None:
    ends = connection_ends(sshd)
    error = verify_error(key_request(sshd, private_key, passphrase))
    assert (error.code, error.message) == (Reason.CONFIG_INVALID, message)
    assert_error_keeps_no_secret(error, passphrase)
    assert_error_keeps_no_secret(error, private_key.splitlines()[1])
    assert connection_ends(sshd) == ends  # refused before connecting


@pytest.mark.parametrize("rounds", [MAX_BCRYPT_ROUNDS + 1, 2**32 - 1])
def test_openssh_key_asking_for_too_many_kdf_rounds_is_config_invalid(
    sshd: localsshd.SshServer, rounds: int
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    sshd.authorize_key(key.export_public_key().decode())
    encrypted = key.export_private_key(
        "openssh", passphrase="open sesame", rounds=16, ignore_few_rounds=True
    ).decode()
    assert_key_refused(
        sshd,
        with_bcrypt_rounds(encrypted, rounds),
        "open sesame",
        f"privateKey asks for {rounds} bcrypt KDF rounds, more than the {MAX_BCRYPT_ROUNDS} "
        "accepted: re-encrypt it with ssh-keygen -p -a 16",
    )


def test_openssh_key_written_by_ssh_keygen_with_its_default_rounds_logs_in(
    sshd: localsshd.SshServer, tmp_path: Path
) -> None:
    path = tmp_path / "id_ed25519"
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", str(path)]
    subprocess.run(keygen, check=True, capture_output=True)
    sshd.authorize_key(path.with_suffix(".pub").read_text())
    assert verify(key_request(sshd, path.read_text(), "open sesame")).code == Reason.VERIFIED


def test_pkcs8_key_asking_for_too_many_pbkdf2_iterations_is_config_invalid(
    sshd: localsshd.SshServer,
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    encrypted = key.export_private_key("pkcs8-pem", passphrase="open sesame").decode()
    iterations = 2**31 - 1
    assert_key_refused(
        sshd,
        with_pbkdf2_iterations(encrypted, iterations),
        "open sesame",
        f"privateKey asks for {iterations} PBKDF2 iterations, more than the "
        f"{MAX_PBKDF2_ITERATIONS} accepted: re-encrypt it with ssh-keygen -p",
    )


def test_pkcs8_key_in_a_legacy_encryption_scheme_is_config_invalid(
    sshd: localsshd.SshServer,
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    encrypted = key.export_private_key(
        "pkcs8-pem", passphrase="open sesame", pbe_version=1, cipher_name="des-cbc", hash_name="md5"
    ).decode()
    assert_key_refused(
        sshd,
        encrypted,
        "open sesame",
        "privateKey is encrypted with a legacy PKCS#8 scheme the sftp driver does not "
        "decrypt: convert it to the OpenSSH format with ssh-keygen -p",
    )


def test_wrong_password_is_authentication_failed_after_exactly_one_attempt(
    sshd: localsshd.SshServer,
) -> None:
    failed, ends = sshd.failed_logins(), connection_ends(sshd)
    error = verify_error(make_request(sshd, password="wrong-" + uuid.uuid4().hex))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert not error.retryable
    assert (
        error.message == f"[127.0.0.1]:{sshd.port} rejected the password for user {sshd.username}"
    )
    after_connection_ends(sshd, ends)
    assert sshd.failed_logins() - failed == 1


def test_unauthorized_key_is_authentication_failed(sshd: localsshd.SshServer) -> None:
    stranger, _ = localsshd.generate_key()
    error = verify_error(key_request(sshd, stranger))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert "rejected the key" in error.message


def test_wrong_host_key_is_tls_error_and_no_credentials_are_sent(
    sshd: localsshd.SshServer,
) -> None:
    _, other_public = localsshd.generate_key()  # same key type, different key
    logins = sshd.failed_logins() + sshd.log_count("Accepted ")
    ends = connection_ends(sshd)
    error = verify_error(make_request(sshd, knownHosts=f"[127.0.0.1]:{sshd.port} {other_public}"))
    assert error.code == Reason.TLS_ERROR
    assert error.message.startswith("host key mismatch")
    after_connection_ends(sshd, ends)
    assert sshd.failed_logins() + sshd.log_count("Accepted ") == logins


def test_pinned_key_of_a_type_the_server_does_not_offer_is_tls_error(
    sshd: localsshd.SshServer,
) -> None:
    ecdsa = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key().decode()
    error = verify_error(make_request(sshd, knownHosts=f"[127.0.0.1]:{sshd.port} {ecdsa}"))
    assert error.code == Reason.TLS_ERROR
    assert error.message.startswith("host key mismatch")


def test_missing_known_hosts_is_config_invalid_naming_the_variable(
    sshd: localsshd.SshServer,
) -> None:
    for known_hosts in ("", "   \n"):
        error = verify_error(make_request(sshd, knownHosts=known_hosts))
        assert error.code == Reason.CONFIG_INVALID
        assert error.message.startswith("knownHosts is required")


def test_known_hosts_are_looked_up_by_the_configured_name_not_the_address(
    sshd: localsshd.SshServer,
) -> None:
    key = sshd.host_public_key
    by_name = make_request(sshd, host="localhost", knownHosts=f"[localhost]:{sshd.port} {key}")
    assert verify(by_name).code == Reason.VERIFIED
    by_address = make_request(sshd, host="localhost", knownHosts=f"[127.0.0.1]:{sshd.port} {key}")
    error = verify_error(by_address)
    assert (error.code, error.message) == (
        Reason.CONFIG_INVALID,
        f"knownHosts has no host key for [localhost]:{sshd.port}",
    )


def test_malformed_known_hosts_is_config_invalid(sshd: localsshd.SshServer) -> None:
    error = verify_error(make_request(sshd, knownHosts="sftp.example.com\n"))
    assert (error.code, error.message) == (
        Reason.CONFIG_INVALID,
        "knownHosts is not in known_hosts format",
    )


def test_missing_credentials_and_unsupported_auth_types(sshd: localsshd.SshServer) -> None:
    assert verify_error(make_request(sshd, secrets={})).code == Reason.SECRET_KEY_MISSING
    assert verify_error(key_request(sshd, "")).code == Reason.SECRET_KEY_MISSING
    error = verify_error(make_request(sshd, auth="bearer"))
    assert error.code == Reason.CONFIG_INVALID
    assert "auth type bearer is not supported by the sftp driver" in error.message


def test_user_name_ssh_cannot_carry_is_config_invalid(sshd: localsshd.SshServer) -> None:
    error = verify_error(make_request(sshd, username="bell\u0007"))
    assert (error.code, error.message) == (Reason.CONFIG_INVALID, "username is not valid for SSH")


def test_closed_port_is_host_unreachable(sshd: localsshd.SshServer) -> None:
    error = verify_error(make_request(sshd, port=free_port()))
    assert error.code == Reason.HOST_UNREACHABLE
    assert error.retryable


def test_silent_listener_times_out_and_is_hung_up_on(sshd: localsshd.SshServer) -> None:
    async def scenario() -> tuple[VerifyOutcome, bool]:
        async with Listener().serve() as listener:
            outcome, _ = await run_verification(
                DRIVER,
                make_request(sshd, port=listener.port),
                egress=OPEN_POLICY,
                timeout_seconds=1.0,
            )
            # The cancelled driver closes the socket instead of leaving it open.
            await asyncio.wait_for(listener.closed.wait(), 10)
            return outcome, listener.connections == 1

    outcome, connected = run(scenario())
    assert (outcome.code, outcome.message) == (Reason.TIMEOUT, "no answer within 1s")
    assert connected


@pytest.mark.parametrize(
    "listener",
    [
        pytest.param(
            Listener(
                reply=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", read_first=True
            ),
            id="http-server",
        ),
        pytest.param(Listener(reply=b"220 ftp.example.com FTP ready\r\n"), id="ftp-greeting"),
        pytest.param(Listener(reply=b""), id="hangs-up-at-once"),
    ],
)
def test_server_not_speaking_ssh_is_protocol_error(
    sshd: localsshd.SshServer, listener: Listener
) -> None:
    async def scenario() -> DriverError:
        async with listener.serve():
            with pytest.raises(DriverError) as info:
                await verify_async(make_request(sshd, port=listener.port))
            return info.value

    assert run(scenario()).code == Reason.PROTOCOL_ERROR


def test_egress_denied_host_is_never_contacted(sshd: localsshd.SshServer) -> None:
    policy = EgressPolicy(denied=parse_networks(["127.0.0.2/32"]))

    async def scenario() -> tuple[DriverError, int]:
        async with Listener(host="127.0.0.2", reply=b"").serve() as listener:
            request = make_request(sshd, host="127.0.0.2", port=listener.port)
            with pytest.raises(DriverError) as info:
                await verify_async(request, policy)
            return info.value, listener.connections

    error, connections = run(scenario())
    assert error.code == Reason.EGRESS_DENIED
    assert connections == 0


def test_canary_password_and_key_appear_in_no_outcome(
    sshd: localsshd.SshServer, tree: Path
) -> None:
    canary_password = f"canary-{uuid.uuid4()}"
    error = verify_error(make_request(sshd, password=canary_password))
    assert error.code == Reason.AUTHENTICATION_FAILED
    assert_error_keeps_no_secret(error, canary_password)

    canary_key, public = localsshd.generate_key()
    # Every line of the key, not only the whole: a partial echo would leak too.
    key_lines = [line for line in canary_key.splitlines() if len(line) > 20]
    stranger = verify_error(key_request(sshd, canary_key))
    assert stranger.code == Reason.AUTHENTICATION_FAILED
    assert not any(line in stranger.message for line in key_lines)
    assert stranger.__context__ is None and stranger.__cause__ is None

    sshd.authorize_key(public)
    failing = (list_files(f"{TREE}/missing"), read_object(f"{TREE}/secret.txt"))
    for request in (
        key_request(sshd, canary_key, checks=failing),
        make_request(sshd, checks=failing),
    ):
        outcome = verify(request)
        assert outcome.code == Reason.RESOURCE_NOT_FOUND
        texts = outcome_texts(outcome)
        assert not any(line in t for line in key_lines for t in texts)
        assert not any(sshd.password in t for t in texts)


# --- checks ------------------------------------------------------------------------------


def test_list_files_and_read_object_pass(sshd: localsshd.SshServer, tree: Path) -> None:
    checks = (
        list_files(f"{TREE}/incoming"),
        list_files(f"{TREE}/empty"),
        read_object(f"{TREE}/incoming/report.csv"),
        list_files(str(tree / "incoming")),  # an absolute path
    )
    outcome = verify(make_request(sshd, checks=checks))
    assert (outcome.result, outcome.code) == ("Succeeded", Reason.VERIFIED)
    assert [(c.type, c.target, c.result) for c in outcome.checks] == [
        ("listFiles", f"{TREE}/incoming", "Succeeded"),
        ("listFiles", f"{TREE}/empty", "Succeeded"),
        ("readObject", f"{TREE}/incoming/report.csv", "Succeeded"),
        ("listFiles", str(tree / "incoming"), "Succeeded"),
    ]
    assert outcome.checks[2].message == "read 16 byte(s)"


def test_missing_paths_are_resource_not_found(sshd: localsshd.SshServer, tree: Path) -> None:
    checks = (
        list_files(f"{TREE}/nowhere"),
        read_object(f"{TREE}/incoming/missing.csv"),
        read_object(f"{TREE}/incoming"),  # a directory is not a readable object
        list_files(f"{TREE}/incoming/report.csv"),  # a file is not a listable directory
    )
    outcome = verify(make_request(sshd, checks=checks))
    assert (outcome.result, outcome.code) == ("Failed", Reason.RESOURCE_NOT_FOUND)
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Failed", Reason.RESOURCE_NOT_FOUND)
    ] * 4
    assert outcome.checks[2].message == f"{TREE}/incoming is a directory, not a file"


def test_unreadable_paths_are_permission_denied(sshd: localsshd.SshServer, tree: Path) -> None:
    checks = (
        list_files(f"{TREE}/incoming"),
        read_object(f"{TREE}/secret.txt"),
        list_files(f"{TREE}/locked"),
        read_object(f"{TREE}/locked/inside.txt"),
    )
    outcome = verify(make_request(sshd, checks=checks))
    assert (outcome.result, outcome.code) == ("Failed", Reason.PERMISSION_DENIED)
    assert not outcome.retryable
    assert [(c.result, c.code) for c in outcome.checks] == [
        ("Succeeded", Reason.VERIFIED),
        ("Failed", Reason.PERMISSION_DENIED),
        ("Failed", Reason.PERMISSION_DENIED),
        ("Failed", Reason.PERMISSION_DENIED),
    ]
    assert outcome.message == (
        f"check readObject {TREE}/secret.txt: {TREE}/secret.txt: Permission denied"
    )


def test_server_stuck_in_a_check_times_out_and_is_hung_up_on(
    sshd: localsshd.SshServer, tree: Path
) -> None:
    ends = connection_ends(sshd)
    request = make_request(sshd, checks=(list_files(TREE), read_object(f"{TREE}/pipe")))
    try:
        outcome, _ = run(run_verification(DRIVER, request, egress=OPEN_POLICY, timeout_seconds=2.0))
    finally:
        # Let the server's open() of the pipe return, so the session can see we left.
        os.close(os.open(tree / "pipe", os.O_RDWR | os.O_NONBLOCK))
    assert (outcome.code, outcome.message) == (Reason.TIMEOUT, "no answer within 2s")
    after_connection_ends(sshd, ends)


def test_other_check_types_are_not_supported(sshd: localsshd.SshServer) -> None:
    outcome = verify(make_request(sshd, checks=(CheckSpec(type="query", sql="select 1"),)))
    assert [(c.result, c.code, c.message) for c in outcome.checks] == [
        ("Failed", Reason.CONFIG_INVALID, "check type query is not supported by the sftp driver")
    ]


def test_base_path_is_where_relative_check_paths_start(
    sshd: localsshd.SshServer, tree: Path
) -> None:
    checks = (list_files("incoming"), read_object("incoming/report.csv"))
    outcome = verify(make_request(sshd, checks=checks, basePath=TREE))
    assert outcome.code == Reason.VERIFIED
    assert [c.target for c in outcome.checks] == ["incoming", "incoming/report.csv"]
    absolute = verify(make_request(sshd, checks=checks, basePath=str(tree)))
    assert absolute.code == Reason.VERIFIED


def test_missing_base_path_is_resource_not_found(sshd: localsshd.SshServer, tree: Path) -> None:
    for base, message in (
        (f"{TREE}/nowhere", f"basePath {TREE}/nowhere: No such file"),
        (f"{TREE}/incoming/report.csv", f"basePath {TREE}/incoming/report.csv is not a directory"),
    ):
        error = verify_error(make_request(sshd, basePath=base, checks=(list_files("."),)))
        assert (error.code, error.message) == (Reason.RESOURCE_NOT_FOUND, message)


def test_base_path_the_user_cannot_reach_is_permission_denied(
    sshd: localsshd.SshServer, tree: Path
) -> None:
    error = verify_error(make_request(sshd, basePath=f"{TREE}/locked/deeper"))
    assert error.code == Reason.PERMISSION_DENIED
