"""The Service Binding Secret that workloads mount (servicebinding.io)."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import unquote, urlsplit

import pytest

from patchbay.api.connector import DriverName
from patchbay.binding import build_binding_secret


def _postgres(**config: str | int | bool) -> dict[str, Any]:
    values: dict[str, str | int | bool] = {
        "host": "db.example.com",
        "port": 5432,
        "database": "app",
    }
    values.update(config)
    return build_binding_secret(
        connection="orders-db",
        namespace="shop",
        uid="0f6f4c1e-1111-2222-3333-444455556666",
        driver="postgres",
        config=values,
        secrets={"username": "orders", "password": "s3cret"},
    )


def test_postgres_binding_has_the_postgresql_service_binding_type() -> None:
    secret = _postgres()

    assert secret["type"] == "servicebinding.io/postgresql"
    assert secret["stringData"]["type"] == "postgresql"
    assert secret["stringData"]["provider"] == "patchbay"


def test_postgres_binding_carries_the_well_known_keys() -> None:
    data = _postgres()["stringData"]

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
    data = _postgres(sslRequired=True)["stringData"]

    assert data["sslRequired"] == "true"
    assert all(isinstance(v, str) for v in data.values())


def test_uri_percent_encodes_a_password_with_special_characters() -> None:
    password = "p@ss:w/rd?#%&é"
    secret = build_binding_secret(
        connection="orders-db",
        namespace="shop",
        uid="uid-1",
        driver="postgres",
        config={"host": "db", "port": 5432, "database": "app"},
        secrets={"username": "orders", "password": password},
    )

    uri = secret["stringData"]["uri"]
    parts = urlsplit(uri)
    assert parts.hostname == "db"
    assert parts.port == 5432
    assert parts.username == "orders"
    assert parts.password is not None
    assert unquote(parts.password) == password
    assert "@" not in parts.password
    assert secret["stringData"]["password"] == password


def test_uri_brackets_an_ipv6_host() -> None:
    secret = build_binding_secret(
        connection="orders-db",
        namespace="shop",
        uid="uid-1",
        driver="postgres",
        config={"host": "::1", "port": 5432, "database": "app"},
        secrets={"username": "u", "password": "p"},
    )

    parts = urlsplit(secret["stringData"]["uri"])
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
    secret = build_binding_secret(
        connection="billing-api",
        namespace="shop",
        uid="uid-2",
        driver="http",
        config={"baseUrl": "https://api.example.com/v2"},
        secrets={"token": "tok-abc"},
    )

    assert secret["type"] == "servicebinding.io/http"
    assert secret["stringData"]["uri"] == "https://api.example.com/v2"
    assert secret["stringData"]["token"] == "tok-abc"


def test_binding_without_a_host_has_no_uri() -> None:
    secret = build_binding_secret(
        connection="files",
        namespace="shop",
        uid="uid-3",
        driver="s3",
        config={"bucket": "reports"},
        secrets={"accessKeyId": "AKIA", "secretAccessKey": "xyz"},
    )

    assert "uri" not in secret["stringData"]
    assert secret["type"] == "servicebinding.io/s3"


@pytest.mark.parametrize("driver", get_args(DriverName))
def test_every_driver_gets_a_binding_of_its_service_type(driver: str) -> None:
    secret = build_binding_secret(
        connection="c",
        namespace="ns",
        uid="0f6f4c1e-1111-2222-3333-444455556666",
        driver=driver,
        config={"host": "h.example.com"},
        secrets={},
    )

    assert secret["type"].startswith("servicebinding.io/")
    assert secret["stringData"]["type"]
