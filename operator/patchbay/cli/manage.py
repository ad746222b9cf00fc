"""Management of Connections for the CLI: describe, verify, suspend, resume, set-default.

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
from patchbay.cli.caller import CommandError, explained, get_connection, patch_connection

POLL_SECONDS = 1.0


def _observed(body: Mapping[str, Any]) -> ConnectionStatus:
    try:
        return ConnectionStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ConnectionStatus()  # not written by the operator: nothing to report


def describe_body(body: Mapping[str, Any]) -> dict[str, Any]:
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
        "hasCredentials": status.has_credentials,
        "secretFields": {
            key: {"configured": value.configured}
            for key, value in sorted(status.secret_fields.items())
        },
        "binding": status.binding.name if status.binding else None,
    }


async def describe(client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return describe_body(await get_connection(client, namespace, name))


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
            return describe_body(body)
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
