"""The Service Binding Secret that workloads mount (servicebinding.io)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from patchbay.core.binding import build_binding_secret
from patchbay.drivers.base import DriverInfo
from patchbay.drivers.registry import REGISTERED, UnknownDriverError, driver_names
from patchbay.kube import secret_values


def _binding(
    driver: str, config: dict[str, str | int | bool], secrets: dict[str, str]
) -> dict[str, Any]:
    """The binding Secret of Connection orders-db in namespace shop."""
    return build_binding_secret(
        connection="orders-db",
        namespace="shop",
        uid="0f6f4c1e-1111-2222-3333-444455556666",
        driver=driver,
        config=config,
        secrets=secrets,
    )


def _postgres(**config: str | int | bool) -> dict[str, Any]:
    values: dict[str, str | int | bool] = {
        "host": "db.example.com",
        "port": 5432,
        "database": "app",
    }
    values.update(config)
    return _binding("postgres", values, {"username": "orders", "password": "s3cret"})


def test_postgres_binding_has_the_postgresql_service_binding_type() -> None:
    secret = _postgres()

    assert secret["type"] == "servicebinding.io/postgresql"
    assert secret_values(secret)["type"] == "postgresql"
    assert secret_values(secret)["provider"] == "patchbay"


def test_postgres_binding_carries_the_well_known_keys() -> None:
    data = secret_values(_postgres())

    assert data == {
        "type": "postgresql",
        "provider": "patchbay",
        "host": "db.example.com",
        "port": "5432",
        "username": "orders",
        "password": "s3cret",
        "database": "app",
        "uri": "postgresql://orders:s3cret@db.example.com:5432/app",
    }


def test_binding_values_are_all_strings_and_booleans_are_lowercase() -> None:
    data = secret_values(_postgres(sslRequired=True))

    assert data["sslRequired"] == "true"
    assert all(isinstance(v, str) for v in data.values())


def test_uri_percent_encodes_a_password_with_special_characters() -> None:
    password = "p@ss:w/rd?#%&é"
    secret = _binding(
        "postgres",
        {"host": "db", "port": 5432, "database": "app"},
        {"username": "orders", "password": password},
    )

    uri = secret_values(secret)["uri"]
    parts = urlsplit(uri)
    assert parts.hostname == "db"
    assert parts.port == 5432
    assert parts.username == "orders"
    assert parts.password is not None
    assert unquote(parts.password) == password
    assert "@" not in parts.password
    assert secret_values(secret)["password"] == password


def test_uri_brackets_an_ipv6_host() -> None:
    secret = _binding(
        "postgres",
        {"host": "::1", "port": 5432, "database": "app"},
        {"username": "u", "password": "p"},
    )

    parts = urlsplit(secret_values(secret)["uri"])
    assert (parts.hostname, parts.port) == ("::1", 5432)


def test_binding_is_owned_by_the_connection_as_controller() -> None:
    metadata = _postgres()["metadata"]

    assert metadata["name"] == "orders-db-binding"
    assert metadata["namespace"] == "shop"
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "patchbay.dev/v1alpha1",
            "kind": "Connection",
            "name": "orders-db",
            "uid": "0f6f4c1e-1111-2222-3333-444455556666",
            "controller": True,
        }
    ]
    assert metadata["labels"]["patchbay.dev/connection"] == "orders-db"
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "patchbay"


def test_http_binding_uri_is_the_base_url() -> None:
    secret = _binding("http", {"baseUrl": "https://api.example.com/v2"}, {"token": "tok-abc"})

    assert secret["type"] == "servicebinding.io/http"
    assert secret_values(secret)["uri"] == "https://api.example.com/v2"
    assert secret_values(secret)["token"] == "tok-abc"


def test_binding_without_a_host_has_no_uri() -> None:
    secret = _binding(
        "s3", {"bucket": "reports"}, {"accessKeyId": "AKIA", "secretAccessKey": "xyz"}
    )

    assert "uri" not in secret_values(secret)
    assert secret["type"] == "servicebinding.io/s3"


def test_binding_of_a_connection_without_a_port_names_its_drivers_default_port() -> None:
    secret = _binding(
        "mysql", {"host": "db", "database": "shop"}, {"username": "app", "password": "pw"}
    )

    assert secret_values(secret)["port"] == "3306"
    assert secret_values(secret)["uri"] == "mysql://app:pw@db:3306/shop"


def test_binding_of_an_unregistered_driver_is_refused() -> None:
    with pytest.raises(UnknownDriverError):
        _binding("oracle", {}, {})


# What a Connection of each kind of driver typically gives: the variables of the
# catalogue's connectors.
_TYPICAL_VALUES: dict[str, tuple[dict[str, str | int | bool], dict[str, str]]] = {
    "host": (
        {"host": "h.example.com", "database": "app", "username": "app"},
        {"password": "pw-123"},
    ),
    "baseUrl": ({"baseUrl": "https://api.example.com/v1"}, {"token": "tok-123"}),
    "bucket": (
        {"endpoint": "https://s3.example.com", "bucket": "reports", "region": "eu-west-1"},
        {"accessKeyId": "AKIA123", "secretAccessKey": "secret-123"},
    ),
}


def _typical(info: DriverInfo) -> tuple[dict[str, str | int | bool], dict[str, str]]:
    if info.binding_uri == "baseUrl":
        return _TYPICAL_VALUES["baseUrl"]
    if info.default_port is None:
        return _TYPICAL_VALUES["bucket"]
    return _TYPICAL_VALUES["host"]


def test_every_registered_driver_has_a_binding_type() -> None:
    assert driver_names()
    for info in REGISTERED:
        assert info.binding_type, info.name
        assert info.binding_type == info.binding_type.lower(), info.name


@pytest.mark.parametrize("info", REGISTERED, ids=lambda info: info.name)
def test_a_connection_of_every_registered_driver_gets_a_binding_with_the_documented_keys(
    info: DriverInfo,
) -> None:
    config, secrets = _typical(info)

    secret = _binding(
        info.name,
        config,
        secrets,
    )

    data = secret_values(secret)
    assert secret["type"] == f"servicebinding.io/{info.binding_type}"
    assert (data["type"], data["provider"]) == (info.binding_type, "patchbay")
    # Every variable, secret or not, as text.
    assert {k: data[k] for k in [*config, *secrets]} == {
        **{k: str(v) for k, v in config.items()},
        **secrets,
    }
    if "host" in config:
        assert data["port"] == str(info.default_port)
    if info.binding_uri == "database":
        assert data["uri"] == (
            f"{info.binding_type}://app:pw-123@h.example.com:{info.default_port}/app"
        )
    elif info.binding_uri == "baseUrl":
        assert data["uri"] == config["baseUrl"]
    else:
        assert "uri" not in data


def test_the_connectors_date_format_reaches_workloads_unless_a_variable_says_otherwise() -> None:
    def binding(config: dict[str, str | int | bool]) -> dict[str, str]:
        return secret_values(
            build_binding_secret(
                connection="orders",
                namespace="shop",
                uid="u-1",
                driver="http",
                config=config,
                secrets={},
                date_format="%d.%m.%Y",
            )
        )

    assert binding({"baseUrl": "https://a.test"})["dateFormat"] == "%d.%m.%Y"
    assert binding({"baseUrl": "https://a.test", "dateFormat": "%Y%m%d"})["dateFormat"] == "%Y%m%d"
