"""The objects the benchmark writes, shaped and sized like the operator's own.

The binding Secret, the statuses and the Events the bare client writes copy what the
operator writes for an http-api Connection (see patchbay/binding.py and a real status),
so the floors pay for the same bytes; the report compares the status sizes.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from kubeapi import API_VERSION

CONNECTOR = "http-api"
TOKEN = "bench-token-0123456789abcdef"
WRONG_TOKEN = "rotated-token-not-accepted-0000"
AUTH_FAILED = "AuthenticationFailed"


def utc(moment: float | None = None) -> str:
    when = (
        datetime.datetime.now(datetime.UTC)
        if moment is None
        else datetime.datetime.fromtimestamp(moment, datetime.UTC)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def names(prefix: str, count: int) -> list[str]:
    width = len(str(max(0, count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def connection(
    name: str,
    base_url: str,
    secret: str,
    *,
    timeout: str | None = None,
    labelled: bool = False,
) -> dict[str, Any]:
    """An http-api Connection; ``labelled`` adds the labels admission or the operator set."""
    metadata: dict[str, Any] = {"name": name}
    if labelled:
        metadata["labels"] = {"patchbay.dev/connector": CONNECTOR, "patchbay.dev/driver": "http"}
    spec: dict[str, Any] = {
        "connectorRef": {"kind": "ClusterConnector", "name": CONNECTOR},
        "config": {"baseUrl": base_url},
        "credentials": {"secretRef": {"name": secret}},
    }
    if timeout is not None:
        spec["verification"] = {"timeout": timeout}
    return {"apiVersion": API_VERSION, "kind": "Connection", "metadata": metadata, "spec": spec}


def token_secret(name: str, token: str = TOKEN) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        # the bench runs without admission webhooks: every Connection may use it
        "metadata": {"name": name, "annotations": {"patchbay.dev/allowed-connections": "*"}},
        "type": "Opaque",
        "stringData": {"token": token},
    }


def binding_name(connection_name: str) -> str:
    return f"{connection_name}-binding"


def binding_secret(
    connection_name: str, namespace: str, uid: str, base_url: str, token: str = TOKEN
) -> dict[str, Any]:
    """The Service Binding Secret the operator applies for an http Connection."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": binding_name(connection_name),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "patchbay",
                "patchbay.dev/connection": connection_name,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Connection",
                    "name": connection_name,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "type": "servicebinding.io/http",
        "stringData": {
            "type": "http",
            "provider": "patchbay",
            "baseUrl": base_url,
            "token": token,
            "uri": base_url,
        },
    }


def _hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def _condition(type_: str, status: str, reason: str, message: str, when: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
        "observedGeneration": 1,
    }


def ready_status(name: str, base_url: str, now: float) -> dict[str, Any]:
    """A Ready status as the operator writes it after a successful verification."""
    when = utc(now)
    ok = "connected and authenticated"
    return {
        "phase": "Ready",
        "observedGeneration": 1,
        "conditions": [
            _condition(
                "ConnectorResolved", "True", "Valid", f"ClusterConnector '{CONNECTOR}'", when
            ),
            _condition(
                "CredentialsResolved",
                "True",
                "Verified",
                "all referenced Secrets and keys found",
                when,
            ),
            _condition("Verified", "True", "Verified", ok, when),
            _condition("Ready", "True", "Verified", ok, when),
        ],
        "verification": {
            "lastAttemptTime": when,
            "lastSuccessTime": when,
            "nextTime": utc(now + 3600),
            "durationMs": 6,
            "consecutiveFailures": 0,
            "inputsHash": _hash(name, base_url, TOKEN),
            "result": "Succeeded",
            "details": {"serverVersion": "bench-api/1.0", "latencyMs": 6},
            "checks": [],
        },
        "hasCredentials": True,
        "secretFields": {"token": {"configured": True}},
        "binding": {"name": binding_name(name)},
        "isDefault": False,
    }


def failed_message(base_url: str) -> str:
    return f"GET {base_url}/: HTTP 401, the server rejected the credentials"


def failed_status(name: str, base_url: str, now: float, failures: int) -> dict[str, Any]:
    """The AuthenticationFailed status the operator writes after a rotation to a wrong token
    (a merge patch over a Ready status: the changed fields and the error)."""
    when = utc(now)
    message = failed_message(base_url)
    status = ready_status(name, base_url, now - 60)
    status["phase"] = "Failed"
    status["conditions"][2:] = [
        _condition("Verified", "False", AUTH_FAILED, message, when),
        _condition("Ready", "False", AUTH_FAILED, message, when),
    ]
    status["verification"].update(
        {
            "lastAttemptTime": when,
            "nextTime": utc(now + 3600),
            "durationMs": 4,
            "consecutiveFailures": failures,
            "inputsHash": _hash(name, base_url, WRONG_TOKEN, str(failures)),
            "result": "Failed",
            "details": {},
            "error": {"code": AUTH_FAILED, "message": message, "retryable": False},
        }
    )
    return status


def event(
    namespace: str, name: str, uid: str, reason: str, type_: str, message: str, now: float
) -> dict[str, Any]:
    """A transition Event shaped like the operator's."""
    when = utc(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "Connection",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "patchbay"},
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "reportingComponent": "patchbay.dev/operator",
        "reportingInstance": "patchbay",
    }
