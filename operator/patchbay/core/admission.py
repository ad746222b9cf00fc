"""Admission decisions for Connections, independent of the webhook machinery.

The CRD schema cannot know which variables a connector marks secret, so this
check runs at admission: a credential written inline in spec.config is
rejected before etcd ever stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchbay.api.connector import ConnectorSpec
from patchbay.core.config import (
    ChecksNotAllowedError,
    ConfigInvalidError,
    allow_connection_checks,
    resolve_config,
)


def connection_problem(
    connector: ConnectorSpec | None,
    spec: Mapping[str, Any],
    old_spec: Mapping[str, Any] | None = None,
) -> str | None:
    """Why the API server should refuse this Connection, or None to admit it.

    Only a new Connection, or an edit of its config, its own checks or its connector, is
    judged:
    a Connection stored before its connector changed can still be labelled,
    suspended or otherwise edited, and then reports ConfigInvalid on its status.
    An unknown connector is admitted too (it may be applied in the same batch);
    the reconciler reports ConnectorNotFound.
    """
    if connector is None:
        return None
    checks = (spec.get("verification") or {}).get("checks") or []
    old_checks = ((old_spec or {}).get("verification") or {}).get("checks") or []
    if (
        old_spec is None
        or checks != old_checks
        or old_spec.get("connectorRef") != spec.get("connectorRef")
    ):
        try:
            allow_connection_checks(connector, checks)
        except ChecksNotAllowedError as exc:
            return str(exc)
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
