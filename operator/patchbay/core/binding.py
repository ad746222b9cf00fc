"""The Service Binding Secret projected for workloads (servicebinding.io spec)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from patchbay.api.common import API_VERSION
from patchbay.drivers.base import DriverInfo
from patchbay.drivers.registry import driver_info
from patchbay.kube import secret_data, secret_values

MANAGED_BY = {"app.kubernetes.io/managed-by": "patchbay"}
CONNECTION_LABEL = "patchbay.dev/connection"


def binding_name(connection: str) -> str:
    return f"{connection}-binding"


def owned_secret_metadata(name: str, connection: str, namespace: str, uid: str) -> dict[str, Any]:
    """Metadata of a Secret the operator writes for a Connection: labelled with it and
    owned by it, so the garbage collector removes it with the Connection."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**MANAGED_BY, CONNECTION_LABEL: connection},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "Connection",
                "name": connection,
                "uid": uid,
                "controller": True,
            }
        ],
    }


def _uri(driver: DriverInfo, values: Mapping[str, str]) -> str | None:
    if driver.binding_uri == "baseUrl":
        return values.get("baseUrl")
    if driver.binding_uri != "database" or "host" not in values:
        return None
    user = quote(values.get("username", ""), safe="")
    password = quote(values.get("password", ""), safe="")
    credentials = f"{user}:{password}@" if user else ""
    port = f":{values['port']}" if "port" in values else ""
    database = quote(values.get("database", ""), safe="")
    host = values["host"]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{driver.binding_type}://{credentials}{host}{port}/{database}"


# The connector's dateFormat, in every binding of its Connections.
DATE_FORMAT_KEY = "dateFormat"
# The key that marks a binding whose credentials are withheld (a suspended Connection).
SUSPENDED_KEY = "suspended"


def withheld_binding_secret(binding: Mapping[str, Any]) -> dict[str, Any]:
    """The binding of a suspended Connection, made from its current one: the same name,
    owner and type, with the type, the provider and the marker ``suspended: "true"`` as
    its only data, so a workload that mounts it starts but finds no credentials."""
    values = secret_values(binding)
    kept: dict[str, str] = {key: values[key] for key in ("type", "provider") if key in values}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            key: binding["metadata"][key]
            for key in ("name", "namespace", "labels", "ownerReferences")
            if key in binding["metadata"]
        },
        "type": binding.get("type", "Opaque"),
        "data": secret_data({**kept, SUSPENDED_KEY: "true"}),
    }


def build_binding_secret(
    *,
    connection: str,
    namespace: str,
    uid: str,
    driver: str,
    config: Mapping[str, str | int | bool],
    secrets: Mapping[str, str],
    date_format: str | None = None,
) -> dict[str, Any]:
    """A Secret of type servicebinding.io/<type>, owned by the Connection.

    Keys are the connector's variables (non-secret and secret) plus the
    spec's well-known `type`, `provider` and, where it applies, `uri`; a
    Connection with a `host` but no `port` gets its driver's default port.
    The type, the URI's form and the default port are the driver's
    registration's; an unregistered driver raises UnknownDriverError.
    """
    info = driver_info(driver)
    values = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
    values.update(secrets)
    if date_format is not None:
        # how the system writes dates, for workloads that parse them; a variable wins
        values.setdefault(DATE_FORMAT_KEY, date_format)
    if "host" in values and "port" not in values and info.default_port is not None:
        values["port"] = str(info.default_port)
    binding_type = info.binding_type
    data = {"type": binding_type, "provider": "patchbay", **values}
    uri = _uri(info, values)
    if uri is not None:
        data["uri"] = uri
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": owned_secret_metadata(binding_name(connection), connection, namespace, uid),
        "type": f"servicebinding.io/{binding_type}",
        "data": secret_data(data),
    }
