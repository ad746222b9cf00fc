"""Secret variables and TLS material come from Secrets; errors never show a value."""

from __future__ import annotations

from typing import Any

import pytest

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import VariableSpec
from patchbay.api.reasons import Reason
from patchbay.core.config import ConfigInvalidError
from patchbay.core.credentials import (
    CredentialsError,
    SecretData,
    credential_sources,
    referenced_secrets,
    resolve_credentials,
)
from patchbay.drivers.base import TlsMaterial

USERNAME = VariableSpec.model_validate({"key": "username", "secret": True, "required": True})
PASSWORD = VariableSpec.model_validate({"key": "password", "secret": True, "required": True})
TOKEN = VariableSpec.model_validate({"key": "token", "secret": True})
SECRET_VARIABLES = (USERNAME, PASSWORD, TOKEN)

PASSWORD_VALUE = "hunter2-very-secret"


def _spec(**fields: Any) -> ConnectionSpec:
    return ConnectionSpec.model_validate({"connectorRef": {"name": "postgres"}, **fields})


def test_secret_ref_provides_keys_named_after_the_variables() -> None:
    spec = _spec(credentials={"secretRef": {"name": "db-creds"}})
    secrets: dict[str, SecretData | None] = {
        "db-creds": {"username": "app", "password": PASSWORD_VALUE, "token": "tok-123"}
    }

    resolved = resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert resolved.values == {"username": "app", "password": PASSWORD_VALUE, "token": "tok-123"}
    assert resolved.configured == {"username": True, "password": True, "token": True}
    assert resolved.tls is None


def test_items_win_over_secret_ref() -> None:
    spec = _spec(
        credentials={
            "secretRef": {"name": "db-creds"},
            "items": [{"key": "password", "secretKeyRef": {"name": "rotated", "key": "pw"}}],
        }
    )
    secrets: dict[str, SecretData | None] = {
        "db-creds": {"username": "app", "password": "old-password"},
        "rotated": {"pw": PASSWORD_VALUE},
    }

    resolved = resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert resolved.values["password"] == PASSWORD_VALUE
    assert resolved.values["username"] == "app"
    sources = {s.variable: (s.secret, s.key) for s in credential_sources(spec, SECRET_VARIABLES)}
    assert sources["password"] == ("rotated", "pw")
    assert sources["username"] == ("db-creds", "username")


def test_missing_secret_is_reported_as_secret_not_found_naming_the_secret() -> None:
    spec = _spec(credentials={"secretRef": {"name": "db-creds"}})

    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(spec, SECRET_VARIABLES, {"db-creds": None})

    assert caught.value.reason == Reason.SECRET_NOT_FOUND
    assert "'db-creds'" in caught.value.message


def test_missing_key_names_secret_and_key_but_no_value() -> None:
    spec = _spec(credentials={"secretRef": {"name": "db-creds"}})
    secrets: dict[str, SecretData | None] = {
        "db-creds": {"username": "app", "passwd": PASSWORD_VALUE}
    }

    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert caught.value.reason == Reason.SECRET_KEY_MISSING
    assert "'db-creds'" in caught.value.message
    assert "'password'" in caught.value.message
    assert PASSWORD_VALUE not in str(caught.value)


def test_missing_key_of_an_item_names_the_items_secret_and_key() -> None:
    spec = _spec(
        credentials={
            "items": [
                {"key": "username", "secretKeyRef": {"name": "users", "key": "user"}},
                {"key": "password", "secretKeyRef": {"name": "passwords", "key": "db-pw"}},
            ]
        }
    )
    secrets: dict[str, SecretData | None] = {
        "users": {"user": "app"},
        "passwords": {"other": PASSWORD_VALUE},
    }

    with pytest.raises(CredentialsError, match="'passwords' has no key 'db-pw'") as caught:
        resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert PASSWORD_VALUE not in caught.value.message


def test_required_secret_variable_without_any_source_is_key_missing() -> None:
    spec = _spec()

    with pytest.raises(CredentialsError, match="'username'") as caught:
        resolve_credentials(spec, SECRET_VARIABLES, {})

    assert caught.value.reason == Reason.SECRET_KEY_MISSING


def test_optional_secret_variable_missing_from_the_secret_is_not_configured() -> None:
    spec = _spec(credentials={"secretRef": {"name": "db-creds"}})
    secrets: dict[str, SecretData | None] = {
        "db-creds": {"username": "app", "password": PASSWORD_VALUE}
    }

    resolved = resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert resolved.configured["token"] is False
    assert "token" not in resolved.values


def test_optional_secret_variable_without_any_source_is_not_configured() -> None:
    spec = _spec()

    resolved = resolve_credentials(spec, (TOKEN,), {})

    assert resolved.configured == {"token": False}
    assert resolved.values == {}


def test_item_naming_a_non_secret_variable_is_invalid_config() -> None:
    spec = _spec(
        credentials={"items": [{"key": "host", "secretKeyRef": {"name": "db", "key": "host"}}]}
    )

    with pytest.raises(ConfigInvalidError, match=r"'host'.*not a secret variable") as caught:
        resolve_credentials(spec, SECRET_VARIABLES, {"db": {"host": "db.example.com"}})

    assert caught.value.variable == "host"


def test_resolved_credentials_repr_shows_no_value() -> None:
    spec = _spec(credentials={"secretRef": {"name": "db-creds"}})
    secrets: dict[str, SecretData | None] = {
        "db-creds": {"username": "app", "password": PASSWORD_VALUE}
    }

    resolved = resolve_credentials(spec, SECRET_VARIABLES, secrets)

    assert PASSWORD_VALUE not in repr(resolved)


def test_tls_material_comes_from_ca_and_client_certificate_secrets() -> None:
    spec = _spec(
        tls={
            "caSecretRef": {"name": "ca"},
            "clientCertSecretRef": {"name": "client"},
            "serverName": "db.internal",
        }
    )
    secrets: dict[str, SecretData | None] = {
        "ca": {"ca.crt": "CA-PEM"},
        "client": {"tls.crt": "CERT-PEM", "tls.key": "KEY-PEM"},
    }

    resolved = resolve_credentials(spec, (), secrets)

    assert resolved.tls == TlsMaterial(
        ca_pem="CA-PEM",
        client_cert_pem="CERT-PEM",
        client_key_pem="KEY-PEM",
        server_name="db.internal",
    )


def test_ca_secret_key_can_be_chosen() -> None:
    spec = _spec(tls={"caSecretRef": {"name": "bundle", "key": "root.pem"}})

    resolved = resolve_credentials(spec, (), {"bundle": {"root.pem": "ROOT"}})

    assert resolved.tls is not None
    assert resolved.tls.ca_pem == "ROOT"
    assert resolved.tls.client_cert_pem is None


def test_client_certificate_secret_without_key_names_the_missing_key() -> None:
    spec = _spec(tls={"clientCertSecretRef": {"name": "client"}})

    with pytest.raises(CredentialsError, match=r"'client' has no key 'tls\.key'") as caught:
        resolve_credentials(spec, (), {"client": {"tls.crt": "CERT-PEM"}})

    assert caught.value.reason == Reason.SECRET_KEY_MISSING
    assert "CERT-PEM" not in caught.value.message


def test_missing_ca_secret_is_secret_not_found() -> None:
    spec = _spec(tls={"caSecretRef": {"name": "ca"}})

    with pytest.raises(CredentialsError, match="'ca' not found") as caught:
        resolve_credentials(spec, (), {})

    assert caught.value.reason == Reason.SECRET_NOT_FOUND


def test_referenced_secrets_include_credentials_and_tls_secrets_once_each() -> None:
    spec = _spec(
        credentials={
            "secretRef": {"name": "db-creds"},
            "items": [{"key": "token", "secretKeyRef": {"name": "tokens", "key": "t"}}],
        },
        tls={"caSecretRef": {"name": "ca"}, "clientCertSecretRef": {"name": "db-creds"}},
    )

    sources = credential_sources(spec, SECRET_VARIABLES)

    assert referenced_secrets(spec, sources) == ["ca", "db-creds", "tokens"]
