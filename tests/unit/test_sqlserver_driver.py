"""How the sqlserver driver classifies python-tds's errors, built as the library builds them."""

from __future__ import annotations

import OpenSSL.SSL
import pytest
from pytds import tds_base

from patchbay.api.reasons import Reason
from patchbay.drivers.sqlserver import _classify, server_version


def server_error(number: int, text: str) -> tds_base.DatabaseError:
    message = {
        "msgno": number,
        "message": text,
        "server": "db",
        "proc_name": "",
        "severity": 14,
        "state": 1,
        "line_number": 1,
    }
    return tds_base._create_exception_by_message(message)


@pytest.mark.parametrize(
    ("number", "text", "reason"),
    [
        (18456, "Login failed for user 'app'.", Reason.AUTHENTICATION_FAILED),
        (
            18486,
            "Login failed for user 'app' because the account is locked.",
            Reason.AUTHENTICATION_FAILED,
        ),
        (
            4060,
            'Cannot open database "orders" requested by the login. The login failed.',
            Reason.RESOURCE_NOT_FOUND,
        ),
        (208, "Invalid object name 'dbo.missing'.", Reason.RESOURCE_NOT_FOUND),
        (
            229,
            "The SELECT permission was denied on the object 'secrets'.",
            Reason.PERMISSION_DENIED,
        ),
        (230, "The SELECT permission was denied on the column 'value'.", Reason.PERMISSION_DENIED),
        (262, "CREATE TABLE permission denied in database 'orders'.", Reason.PERMISSION_DENIED),
        (
            297,
            "The user does not have permission to perform this action.",
            Reason.PERMISSION_DENIED,
        ),
        (
            300,
            "VIEW SERVER STATE permission was denied on object 'server'.",
            Reason.PERMISSION_DENIED,
        ),
        (
            3906,
            'Failed to update database "orders" because the database is read-only.',
            Reason.CONFIG_INVALID,
        ),
        (102, "Incorrect syntax near 'selec'.", Reason.PROVIDER_ERROR),
    ],
)
def test_server_errors_map_by_number(number: int, text: str, reason: Reason) -> None:
    error = _classify(server_error(number, text))
    assert error.code == reason
    assert error.message.startswith(text)


def test_cannot_open_database_followed_by_login_failed_is_resource_not_found() -> None:
    # The server sends 4060 then 18456; python-tds keeps the last number and all texts.
    session_messages = [
        'Cannot open database "orders" requested by the login. The login failed.',
        "Login failed for user 'app'.",
    ]
    exc = tds_base._create_exception_by_message(
        {
            "msgno": 18456,
            "message": session_messages[-1],
            "server": "db",
            "proc_name": "",
            "severity": 14,
            "state": 1,
            "line_number": 1,
        },
        " ".join(session_messages),
    )
    error = _classify(exc)
    assert error.code == Reason.RESOURCE_NOT_FOUND
    assert "no user in the database" in error.message


@pytest.mark.parametrize(
    ("exc", "connected", "reason"),
    [
        (ConnectionRefusedError(111, "Connection refused"), False, Reason.HOST_UNREACHABLE),
        (TimeoutError("timed out"), True, Reason.TIMEOUT),
        (ConnectionResetError(104, "reset"), True, Reason.PROTOCOL_ERROR),
        (tds_base.ClosedConnectionError(), True, Reason.PROTOCOL_ERROR),
        (tds_base.InterfaceError("Invalid TDS marker: 72(48)"), True, Reason.PROTOCOL_ERROR),
        (
            tds_base.Error("You requested encryption but it is not supported by server"),
            True,
            Reason.TLS_ERROR,
        ),
        (tds_base.Error("Certificate does not match host name 'db'"), True, Reason.TLS_ERROR),
        (
            OpenSSL.SSL.Error([("SSL routines", "", "certificate verify failed")]),
            True,
            Reason.TLS_ERROR,
        ),
        (UnicodeDecodeError("utf-16-le", b"\xff", 0, 1, "truncated"), True, Reason.PROTOCOL_ERROR),
    ],
)
def test_client_errors_map_by_kind(exc: BaseException, connected: bool, reason: Reason) -> None:
    assert _classify(exc, connected=connected).code == reason


def test_tls_failure_names_openssls_reason() -> None:
    exc = OpenSSL.SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert _classify(exc).message == "TLS: certificate verify failed"


def test_server_version_reads_major_minor_and_build() -> None:
    assert server_version(0x10000FFF) == "SQL Server 16.0.4095"


def test_a_login_routed_to_another_server_is_refused_as_egress_denied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-tds's own login returns the route the server sent; following it would open
    # a socket the egress policy never saw and send the password there.
    from pytds.tds_socket import _TdsSocket

    from patchbay.drivers import sqlserver

    monkeypatch.setattr(
        sqlserver, "_route_following_login", lambda _: {"server": "10.1.2.3", "port": 1433}
    )
    with pytest.raises(Exception) as refused:
        _TdsSocket.login(object())  # type: ignore[arg-type]

    error = _classify(refused.value)
    assert error.code == Reason.EGRESS_DENIED
    assert "10.1.2.3:1433" in error.message

    monkeypatch.setattr(sqlserver, "_route_following_login", lambda _: None)
    assert _TdsSocket.login(object()) is None  # type: ignore[arg-type]
