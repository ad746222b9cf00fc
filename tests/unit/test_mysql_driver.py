"""Pure parts of the mysql driver: version strings and error classification."""

from __future__ import annotations

import ssl

import pymysql
import pytest

from patchbay.api.reasons import Reason
from patchbay.drivers.mysql import _classify, server_version


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        ("5.5.5-10.11.6-MariaDB-0+deb12u1-log", "MariaDB 10.11.6"),
        ("11.4.2-MariaDB-ubu2404", "MariaDB 11.4.2"),
        ("8.0.36", "MySQL 8.0.36"),
        ("5.7.44-log", "MySQL 5.7.44"),
        ("8.0.35-27-Percona", "MySQL 8.0.35"),
    ],
)
def test_server_version_names_product_and_release(reported: str, shown: str) -> None:
    assert server_version(reported) == shown


def _connect_error(cause: OSError) -> pymysql.err.OperationalError:
    """What aiomysql raises for a failure while connecting: error 2003 caused by the OSError."""
    error = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'")
    error.__cause__ = cause
    return error


def test_certificate_verification_failure_is_tls_error_with_the_reason() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    error = _classify(_connect_error(cause))
    assert error.code == Reason.TLS_ERROR
    assert error.message.endswith("unable to get local issuer certificate")


@pytest.mark.parametrize(
    ("cause", "code"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), Reason.HOST_UNREACHABLE),
        (OSError(113, "No route to host"), Reason.HOST_UNREACHABLE),
        (ConnectionResetError(104, "reset"), Reason.PROTOCOL_ERROR),
        (TimeoutError(), Reason.TIMEOUT),
        (ssl.SSLError(1, "wrong version number"), Reason.TLS_ERROR),
    ],
)
def test_connection_phase_os_errors_are_classified(cause: OSError, code: Reason) -> None:
    assert _classify(_connect_error(cause)).code == code


def test_secure_transport_refusal_is_tls_error() -> None:
    # MySQL's and MariaDB's wording when a server requires TLS for the statement.
    for error in (
        pymysql.err.OperationalError(3159, "Connections using insecure transport are prohibited"),
        pymysql.err.InternalError(
            1290, "The MariaDB server is running with the --require-secure-transport option"
        ),
    ):
        assert _classify(error).code == Reason.TLS_ERROR


def test_other_option_refusal_is_provider_error() -> None:
    error = pymysql.err.InternalError(1290, "The MariaDB server is running with the --read-only")
    assert _classify(error).code == Reason.PROVIDER_ERROR


def test_packet_out_of_order_is_protocol_error() -> None:
    error = pymysql.err.InternalError("Packet sequence number wrong - got 72 expected 0")
    assert _classify(error).code == Reason.PROTOCOL_ERROR
