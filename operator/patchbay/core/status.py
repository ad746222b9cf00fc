"""Conditions and phase of a Connection, derived from what reconciliation found.

Pure: the reconciler gathers facts into ``Findings`` and writes the result of
``connection_status`` in one status patch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from patchbay.api.common import ConditionStatus
from patchbay.api.connection import ConnectionStatus
from patchbay.api.crd import JsonSchema, structural_schema
from patchbay.api.reasons import NOT_RETRYABLE, Reason

ELLIPSIS = "…"


@dataclass(frozen=True)
class ConditionState:
    status: ConditionStatus
    reason: Reason
    message: str = ""


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    desired: Sequence[tuple[str, ConditionState]],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """New conditions; lastTransitionTime moves only when a condition's status changes."""
    old = {c.get("type"): c for c in previous}
    merged = []
    for type_, state in desired:
        before = old.get(type_)
        changed = before is None or before.get("status") != state.status
        condition: dict[str, Any] = {
            "type": type_,
            "status": state.status,
            "reason": str(state.reason),
            "message": state.message,
            "lastTransitionTime": _timestamp(now)
            if changed or before is None
            else before.get("lastTransitionTime", _timestamp(now)),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        merged.append(condition)
    return merged


@dataclass(frozen=True)
class Findings:
    """What one reconciliation learned, step by step; later steps are None when not reached."""

    suspended: bool
    connector: ConditionState
    credentials: ConditionState | None
    verified: ConditionState | None
    stale: bool = False
    default_conflict: str | None = None
    binding_conflict: str | None = None


PENDING = ConditionState("Unknown", Reason.PENDING, "not verified yet")
# Reasons of a successful verification that the user should still look at.
SUCCESS_WARNINGS = frozenset({Reason.CREDENTIALS_NOT_REQUIRED})


def ready_condition(findings: Findings) -> ConditionState:
    """The summary: True only for a current, successful verification without conflicts."""
    if findings.suspended:
        return ConditionState("False", Reason.SUSPENDED, "spec.suspend is true")
    steps = (findings.connector, findings.credentials, findings.verified)
    # a definite failure explains more than a step left pending because of it
    for step in steps:
        if step is not None and step.status == "False":
            return step
    for step in steps:
        if step is None:
            return PENDING
        if step.status != "True":
            return step
    if findings.default_conflict is not None:
        return ConditionState("False", Reason.DEFAULT_CONFLICT, findings.default_conflict)
    if findings.binding_conflict is not None:
        return ConditionState("False", Reason.BINDING_CONFLICT, findings.binding_conflict)
    if findings.stale:
        return ConditionState(
            "Unknown", Reason.STALE, "the last success is older than twice the interval"
        )
    message = findings.verified.message if findings.verified else ""
    if findings.connector.reason == Reason.CONNECTOR_DEPRECATED:
        message = f"{message}; {findings.connector.message}"
    # a success that proved less than it should stays a warning on Ready
    reason = Reason.VERIFIED
    if findings.verified is not None and findings.verified.reason in SUCCESS_WARNINGS:
        reason = findings.verified.reason
    return ConditionState("True", reason, message)


def phase(findings: Findings, ready: ConditionState) -> str:
    if findings.suspended:
        return "Suspended"
    if ready.status == "True":
        return "Ready"
    if ready.status == "Unknown":
        return "Pending"  # no definite answer yet: pending, not failed
    return "Failed"


# Failures that hold until an input changes (no retry before the next regular time or an
# edit): Stalled, which kstatus (Flux's health checks) reports as Failed.
STALLED_REASONS = frozenset(
    {
        *NOT_RETRYABLE,
        Reason.CONNECTOR_NOT_FOUND,
        Reason.SECRET_NOT_FOUND,
        Reason.SECRET_KEY_MISSING,
        Reason.SECRET_NOT_AUTHORIZED,
        Reason.DEFAULT_CONFLICT,
        Reason.BINDING_CONFLICT,
    }
)


def progress_conditions(ready: ConditionState) -> list[tuple[str, ConditionState]]:
    """kstatus' abnormal-true conditions next to Ready, present only while true: Stalled
    for a failure that waits for a change, Reconciling while a result is still to come
    (a first verification, a wait for the rate limit, a retry after a transient failure).
    A Stale success has neither: nothing is under way, nothing has failed."""
    if ready.status == "True" or ready.reason == Reason.STALE:
        return []
    holding = ConditionState("True", ready.reason, ready.message)
    if ready.status == "False" and ready.reason in STALLED_REASONS:
        return [("Stalled", holding)]
    return [("Reconciling", holding)]


class Summary(NamedTuple):
    """What a status write says at the top: phase, the Ready reason (status.reason) and
    the conditions."""

    phase: str
    reason: str
    conditions: list[dict[str, Any]]


def connection_conditions(
    findings: Findings,
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
) -> Summary:
    """Phase, reason and conditions, in a stable order: the three steps, then Ready and
    Reconciling or Stalled. A suspended Connection has no Ready condition: it is not
    ready, yet nothing is wrong or under way, which kstatus and Flux read as Current
    (Ready False would read as in progress forever); phase and reason say Suspended."""
    ready = ready_condition(findings)
    desired = [
        ("ConnectorResolved", findings.connector),
        ("CredentialsResolved", findings.credentials or PENDING),
        ("Verified", findings.verified or PENDING),
    ]
    if not findings.suspended:
        desired += [("Ready", ready), *progress_conditions(ready)]
    conditions = merge_conditions(previous, desired, generation, now)
    return Summary(phase(findings, ready), str(ready.reason), conditions)


@cache
def _status_schema() -> JsonSchema:
    return structural_schema(ConnectionStatus)


def _fit(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        limit = schema.get("maxLength")
        if limit is not None and len(value) > limit:
            return value[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS
        return value
    if isinstance(value, list):
        items = schema.get("items") or {}
        kept = value[: schema.get("maxItems", len(value))]
        return [_fit(item, items) for item in kept]
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        others = schema.get("additionalProperties")
        fitted: dict[str, Any] = {}
        for key, item in value.items():
            sub = properties.get(key, others if isinstance(others, dict) else {})
            fitted[key] = _fit(item, sub)
        return fitted
    return value


def fit_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status cut to the CRD's limits, so the API server never refuses it as too long.

    Every string (messages, targets, server versions, ...) is shortened to its
    schema's maxLength and every list to its maxItems: the one place where what
    the operator learned is made to fit what it may write.
    """
    fitted: dict[str, Any] = _fit(dict(status), _status_schema())
    return fitted
