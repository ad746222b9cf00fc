"""Which connector a Connection refers to, and whether that connector is usable.

Shared by the reconciler, the admission webhook and the CLI's discovery, so the
three judge a connector the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec
from patchbay.api.reasons import Reason
from patchbay.core.config import ResolvedConfig
from patchbay.core.schedule import bounds
from patchbay.core.status import ConditionState
from patchbay.drivers.base import Driver

ConnectorKey = tuple[str, str, str]  # kind, namespace ("" for cluster scope), name
# config variables that name where a driver connects
_DESTINATION_VARIABLES = ("host", "baseUrl", "endpoint", "url")


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors without the offending input, which may be a credential."""
    first = exc.errors(include_input=False, include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}"


def connector_key(namespace: str, spec: Mapping[str, Any]) -> ConnectorKey:
    ref = spec.get("connectorRef") or {}
    kind = ref.get("kind", "ClusterConnector")
    return (kind, "" if kind == "ClusterConnector" else namespace, ref.get("name", ""))


def judge_connector(
    ckey: ConnectorKey, body: Mapping[str, Any] | None, drivers: Mapping[str, Driver]
) -> tuple[ConditionState, ConnectorSpec | None]:
    """The ConnectorResolved condition, and the connector's spec when it is usable."""
    kind, _, name = ckey
    if body is None:
        return ConditionState(
            "False", Reason.CONNECTOR_NOT_FOUND, f"{kind} {name!r} not found"
        ), None
    try:
        connector = ConnectorSpec.model_validate(body.get("spec", {}))
    except ValidationError as exc:
        return ConditionState("False", Reason.CONNECTOR_INVALID, validation_message(exc)), None
    if connector.driver not in drivers:
        return ConditionState(
            "False", Reason.CONNECTOR_INVALID, f"driver {connector.driver!r} is not available"
        ), None
    if connector.deprecated:
        return ConditionState(
            "True", Reason.CONNECTOR_DEPRECATED, f"{kind} {name!r} is deprecated"
        ), connector
    return ConditionState("True", Reason.VALID, f"{kind} {name!r}"), connector


def verification_timeout(spec: ConnectionSpec, connector: ConnectorSpec) -> float:
    """Seconds one verification (or one discovery call) may take."""
    return bounds(spec, connector).timeout_seconds


def destination(driver: str, config: ResolvedConfig) -> str:
    """host:port a verification connects to, as far as the config says."""
    for variable in _DESTINATION_VARIABLES:
        value = config.values.get(variable)
        if isinstance(value, str) and value:
            if "://" in value:
                return f"{driver}:{urlsplit(value).netloc.lower()}"
            return f"{driver}:{value.lower()}:{config.values.get('port', '')}"
    return driver
