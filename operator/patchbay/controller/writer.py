"""Every write the operator makes about a Connection's outcome: its status, in one
patch cut to the schema's limits, and an Event when its Ready condition changes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from patchbay import kube
from patchbay.api.common import API_VERSION, DRIVER_LABEL
from patchbay.api.connection import ConnectionStatus, VerificationStatus
from patchbay.api.reasons import Reason
from patchbay.controller.cache import Key, Tracked, compact
from patchbay.core.status import SUCCESS_WARNINGS, Findings, connection_conditions, fit_status
from patchbay.logs import object_fields
from patchbay.metrics import Metrics

logger = logging.getLogger(__name__)

# what a condition says when the API server refused the status that explained it
STATUS_REFUSED_MESSAGE = (
    "the API server refused this Connection's full status; the reason stands, "
    "the operator's log has the details"
)


def now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def refused(exc: kube.KubeApiError) -> bool:
    """A 4xx that repeating the same request cannot fix (not a conflict or throttling)."""
    return 400 <= exc.status < 500 and exc.status not in (404, 409, 429)


def api_problem(exc: Exception) -> str:
    if isinstance(exc, kube.KubeApiError):
        return f"the API server answered {exc.status} {exc.reason}"
    return type(exc).__name__


def wire(model: ConnectionStatus | VerificationStatus) -> dict[str, Any]:
    """The model as written: camelCase, and a field set to None stays None, so the merge
    patch removes it (an error from before a success, a binding that went away)."""
    return model.model_dump(by_alias=True, mode="json", exclude_unset=True)


def ready_of(phase: str | None, conditions: Any) -> tuple[str | None, str | None]:
    """Status and reason of Ready; a suspended Connection, which has no Ready condition,
    counts as (False, Suspended)."""
    if phase == "Suspended":
        return "False", Reason.SUSPENDED
    for c in conditions or []:
        if c.get("type") == "Ready":
            return c.get("status"), c.get("reason")
    return None, None


def ready_reason(status: ConnectionStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == "Ready"), None)


class StatusWriter:
    def __init__(self, client: kube.KubeClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics

    async def write(
        self,
        key: Key,
        record: Tracked,
        findings: Findings,
        extra: Mapping[str, Any],
        is_default: bool,
    ) -> None:
        """Conditions and phase from the findings, with ``extra`` fields, in one patch."""
        status = record.status
        summary = connection_conditions(
            findings, status.get("conditions") or [], record.generation, now()
        )
        phase, reason, conditions = summary.phase, summary.reason, summary.conditions
        written = {
            "phase": phase,
            "reason": reason,
            "conditions": conditions,
            "isDefault": is_default,
            "observedGeneration": record.generation,
            **extra,
        }
        # Sending a refused patch again would be refused again. The reason alone (short,
        # from a fixed list) always fits, so the Connection still says what is wrong; the
        # next attempt comes at its regular time.
        if not await self._patch_unless_refused(key, record, written, "status"):
            conditions = [{**c, "message": STATUS_REFUSED_MESSAGE} for c in conditions]
            reason_only = {"phase": phase, "reason": reason, "conditions": conditions}
            if not await self._patch_unless_refused(key, record, reason_only, "reason"):
                return
        await self.written(key, record, status, phase, conditions)

    async def _patch_unless_refused(
        self, key: Key, record: Tracked, status: Mapping[str, Any], what: str
    ) -> bool:
        """False when the API server refused the patch as such (a 4xx repeating cannot fix)."""
        try:
            await self.patch(key, record, status)
        except kube.KubeApiError as exc:
            if not refused(exc):
                raise
            logger.error(
                "the API server refused the %s of %s/%s (%s %s)",
                what,
                *key,
                exc.status,
                exc.reason,
                extra=object_fields(*key),
            )
            return False
        return True

    async def patch(self, key: Key, record: Tracked, status: Mapping[str, Any]) -> None:
        """Every status write of a Connection: cut to the schema's limits and read through
        the ConnectionStatus model, so only what the API defines is written. The answer
        becomes the status the next decision starts from."""
        written = wire(ConnectionStatus.model_validate(fit_status(status)))
        answer = await self.client.merge_patch(
            kube.connection_path(*key) + "/status", {"status": written}
        )
        if answer:
            record.status_json = compact(answer.get("status") or {})
            record.resource_version = (answer.get("metadata") or {}).get("resourceVersion")

    async def written(
        self,
        key: Key,
        record: Tracked,
        old_status: Mapping[str, Any],
        phase: str,
        conditions: list[dict[str, Any]],
    ) -> None:
        """After a status write: the phase metric, and an Event on a transition."""
        connector = (record.connector or ("", "", ""))[2]
        driver = dict(record.labels).get(DRIVER_LABEL, "")
        reason = ready_of(phase, conditions)[1] or ""
        self.metrics.observe_phase(*key, connector, phase, driver=driver, reason=reason)
        await self._record_transition(key, record, old_status, phase, conditions)

    async def _record_transition(
        self,
        key: Key,
        record: Tracked,
        old_status: Mapping[str, Any],
        phase: str,
        conditions: list[dict[str, Any]],
    ) -> None:
        """An Event when Ready changes status or reason; none on a repeat."""
        before = ready_of(old_status.get("phase"), old_status.get("conditions"))
        after = ready_of(phase, conditions)
        if before == after:
            return
        reason_text = after[1] or ""
        if reason_text == Reason.SUSPENDED:
            event_reason, event_type = "Suspended", "Normal"
        elif before[1] == Reason.SUSPENDED:
            event_reason, event_type = "Resumed", "Normal"
        elif reason_text in SUCCESS_WARNINGS:
            event_reason, event_type = reason_text, "Warning"
        elif after[0] == "True":
            event_reason, event_type = "Verified", "Normal"
        elif reason_text == Reason.PENDING:
            return
        elif reason_text == Reason.STALE:
            event_reason, event_type = "Stale", "Warning"
        elif after[0] == "Unknown":
            return  # not a result yet (e.g. waiting for the rate limit)
        else:
            event_reason, event_type = "VerificationFailed", "Warning"
        message = next(
            (c["message"] for c in conditions if c["type"] == "Ready"),
            "spec.suspend is true" if event_reason == "Suspended" else "",
        )
        if event_reason == "VerificationFailed":
            message = f"{reason_text}: {message}"
        if event_reason == "Resumed" and after[0] == "True":
            event_reason = "Verified"
        logger.info(
            "%s/%s is now %s: %s (%s)",
            *key,
            phase,
            event_reason,
            after[1],
            extra=object_fields(*key),
        )
        await self._post_event(key, record, event_reason, event_type, message)

    async def _post_event(
        self, key: Key, record: Tracked, reason: str, type_: str, message: str
    ) -> None:
        stamp = timestamp(now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{key[1]}.", "namespace": key[0]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "Connection",
                "name": key[1],
                "namespace": key[0],
                "uid": record.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "patchbay"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "patchbay.dev/operator",
            "reportingInstance": "patchbay",
        }
        try:
            await self.client.create(kube.events_path(key[0]), event)
        except kube.KubeApiError as exc:
            logger.warning(
                "could not record event %s on %s/%s: %s %s",
                reason,
                *key,
                exc.status,
                exc.reason,
                extra=object_fields(*key),
            )
