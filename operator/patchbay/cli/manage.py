"""Management of Connections for the CLI: describe, verify, suspend, resume, set-default
(and list, in patchbay.cli.listing).

Plain async functions over a ``KubeClient`` acting as the caller. Each returns
the machine-readable result (stable camelCase field names) that the CLI prints
as JSON or YAML, or turns into a table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from patchbay import kube
from patchbay.api.common import DRIVER_LABEL, VERIFY_REQUESTED_ANNOTATION
from patchbay.api.connection import ConnectionStatus, VerificationStatus
from patchbay.api.connector import ConnectorSpec
from patchbay.cli.caller import CommandError, explained, get_connection, patch_connection

POLL_SECONDS = 1.0


def _observed(body: Mapping[str, Any]) -> ConnectionStatus:
    try:
        return ConnectionStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ConnectionStatus()  # not written by the operator: nothing to report


def config_entries(
    config: Mapping[str, Any], connector: ConnectorSpec | None
) -> list[dict[str, Any]]:
    """The Connection's non-secret settings with the connector's defaults, each marked set
    or default and advanced or not. A secret variable's value is never shown, also when
    it was written inline (which the webhook refuses); without the connector, whether a
    key is secret is unknown, so no value is shown."""
    entries: list[dict[str, Any]] = []
    known = {v.key: v for v in connector.variables} if connector else {}
    for variable in known.values():
        if variable.secret:
            if variable.key in config:
                entries.append({"key": variable.key, "value": SECRET_NOT_SHOWN, "set": True})
            continue
        if variable.key not in config and variable.default is None:
            continue
        entries.append(
            {
                "key": variable.key,
                "label": variable.label,
                "value": config.get(variable.key, variable.default),
                "set": variable.key in config,
                "advanced": variable.advanced,
            }
        )
    for key in sorted(set(config) - set(known)):
        value = config[key] if connector else UNKNOWN_NOT_SHOWN
        entries.append({"key": key, "value": value, "set": True})
    return entries


SECRET_NOT_SHOWN = "(a secret variable: not shown)"
UNKNOWN_NOT_SHOWN = "(connector not readable: not shown)"


def describe_body(
    body: Mapping[str, Any], connector: ConnectorSpec | None = None
) -> dict[str, Any]:
    """What a person asks about a Connection; secret fields say only whether they are set."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    ref = spec.get("connectorRef") or {}
    status = _observed(body)
    verification = (status.verification or VerificationStatus()).model_dump(
        by_alias=True, mode="json"
    )
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "displayName": spec.get("displayName"),
        "description": spec.get("description"),
        "connector": {"kind": ref.get("kind", "ClusterConnector"), "name": ref.get("name")},
        "driver": (metadata.get("labels") or {}).get(DRIVER_LABEL),
        "phase": status.phase,
        "suspend": bool(spec.get("suspend")),
        "default": bool(spec.get("default")),
        "isDefault": bool(status.is_default),
        "conditions": [
            c.model_dump(
                by_alias=True,
                mode="json",
                include={"type", "status", "reason", "message", "last_transition_time"},
            )
            for c in status.conditions
        ],
        "verification": {
            field: verification.get(field)
            for field in (
                "result",
                "error",
                "lastAttemptTime",
                "lastSuccessTime",
                "nextTime",
                "durationMs",
                "consecutiveFailures",
                "requestedAt",
                "details",
                "checks",
            )
        },
        "config": config_entries(spec.get("config") or {}, connector),
        "hasCredentials": status.has_credentials,
        "secretFields": {
            key: {"configured": value.configured}
            for key, value in sorted(status.secret_fields.items())
        },
        "binding": status.binding.name if status.binding else None,
        "credentialsWithheld": bool(status.binding and status.binding.credentials_withheld),
    }


async def connector_of(
    client: kube.KubeClient, namespace: str, body: Mapping[str, Any]
) -> ConnectorSpec | None:
    """The Connection's connector as the caller may read it; None when they may not, it
    does not exist, or it is not valid."""
    kind, name = _connector_of(body)
    try:
        found = await client.get(kube.connector_path(kind, namespace, name))
        return ConnectorSpec.model_validate((found or {})["spec"]) if found else None
    except (kube.KubeApiError, KeyError, ValidationError):
        return None


async def describe(client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    body = await get_connection(client, namespace, name)
    return describe_body(body, await connector_of(client, namespace, body))


def request_timestamp(now: datetime) -> str:
    """Microseconds, so two requests within one second are still two changes."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def request_verification(client: kube.KubeClient, namespace: str, name: str) -> str:
    """Set the annotation the operator watches; returns its value."""
    body = await get_connection(client, namespace, name)
    if (body.get("spec") or {}).get("suspend"):
        raise CommandError(
            f"Connection {name!r} is suspended and is not verified; "
            f"run 'patchbay resume {name}' first"
        )
    requested = request_timestamp(datetime.now(UTC))
    await patch_connection(
        client,
        namespace,
        name,
        {"metadata": {"annotations": {VERIFY_REQUESTED_ANNOTATION: requested}}},
    )
    return requested


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def answers(verification: Mapping[str, Any], requested: str) -> bool:
    """Whether a verification status answers this request (or a later one)."""
    answered = verification.get("requestedAt")
    if answered == requested:
        return True
    answered_time, requested_time = _parse(answered), _parse(requested)
    return (
        answered_time is not None and requested_time is not None and answered_time >= requested_time
    )


async def wait_for_verification(
    client: kube.KubeClient,
    namespace: str,
    name: str,
    requested: str,
    timeout_seconds: float,
    tick: Callable[[float], None] = lambda elapsed: None,
) -> dict[str, Any]:
    """The described Connection once its status answers the request; ``tick`` gets the
    seconds waited so far, about once per poll."""
    started = time.monotonic()
    while True:
        body = await get_connection(client, namespace, name)
        verification = (body.get("status") or {}).get("verification") or {}
        if answers(verification, requested):
            return describe_body(body, await connector_of(client, namespace, body))
        if (body.get("spec") or {}).get("suspend"):
            raise CommandError(f"Connection {name!r} was suspended before it was verified")
        elapsed = time.monotonic() - started
        if elapsed >= timeout_seconds:
            raise CommandError(
                f"no verification of {name!r} within {timeout_seconds:g}s; "
                "is the patchbay operator running and watching this namespace?"
            )
        tick(elapsed)
        await asyncio.sleep(min(POLL_SECONDS, timeout_seconds - elapsed))


async def set_suspend(
    client: kube.KubeClient, namespace: str, name: str, suspend: bool
) -> dict[str, Any]:
    await patch_connection(client, namespace, name, {"spec": {"suspend": suspend}})
    return {"name": name, "namespace": namespace, "suspend": suspend}


def _connector_of(body: Mapping[str, Any]) -> tuple[str, str]:
    ref = (body.get("spec") or {}).get("connectorRef") or {}
    return ref.get("kind", "ClusterConnector"), ref.get("name", "")


async def set_default(client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """Make this the default Connection of its connector, clearing the flag on the others.

    The others are cleared first: since the oldest claim wins, setting this one first would
    leave it in DefaultConflict until they were cleared.
    """
    target = await get_connection(client, namespace, name)
    connector = _connector_of(target)
    with explained("list", "connections", namespace):
        listing = await client.get(kube.connection_path(namespace)) or {}
    others = sorted(
        item["metadata"]["name"]
        for item in listing.get("items") or []
        if item["metadata"]["name"] != name
        and (item.get("spec") or {}).get("default")
        and _connector_of(item) == connector
    )
    for other in others:
        await patch_connection(client, namespace, other, {"spec": {"default": False}})
    await patch_connection(client, namespace, name, {"spec": {"default": True}})
    return {
        "name": name,
        "namespace": namespace,
        "connector": {"kind": connector[0], "name": connector[1]},
        "cleared": others,
    }
