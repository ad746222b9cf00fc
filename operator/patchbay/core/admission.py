"""Admission decisions for Connections, independent of the webhook machinery.

The CRD schema cannot know which variables a connector marks secret, so this
check runs at admission: a credential written inline in spec.config is
rejected before etcd ever stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.core.config import (
    ConfigInvalidError,
    NotAllowedError,
    allow_connection_options,
    resolve_config,
)

# What a Connection may ask of its connector only where the connector allows it.
_OPTIONS = (
    ("connectorRef",),
    ("verification", "checks"),
    ("verification", "http"),
    ("verification", "schedule"),
    ("verification", "timeZone"),
    ("binding",),
)


def _options(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = spec
    for key in path:
        found = (found or {}).get(key)
    return found


def connection_problem(
    connector: ConnectorSpec | None,
    spec: Mapping[str, Any],
    old_spec: Mapping[str, Any] | None = None,
) -> str | None:
    """Why the API server should refuse this Connection, or None to admit it.

    Only a new Connection, or an edit of its config, its connector or what it asks of
    the connector (checks, a verification request, an access token in its binding), is
    judged:
    a Connection stored before its connector changed can still be labelled,
    suspended or otherwise edited, and then reports ConfigInvalid on its status.
    An unknown connector is admitted too (it may be applied in the same batch);
    the reconciler reports ConnectorNotFound.
    """
    if connector is None:
        return None
    if old_spec is None or any(
        _options(old_spec, path) != _options(spec, path) for path in _OPTIONS
    ):
        try:
            allow_connection_options(connector, ConnectionSpec.model_validate(spec))
        except NotAllowedError as exc:
            return str(exc)
        except ValidationError:
            return None  # the schema refuses it, with a better message
    if old_spec is not None and all(
        old_spec.get(field) == spec.get(field) for field in ("config", "connectorRef")
    ):
        return None
    try:
        resolve_config(connector, spec.get("config") or {})
    except ConfigInvalidError as exc:
        # The message names the variable and never repeats a secret value.
        return f"spec.config: {exc}"
    return None
