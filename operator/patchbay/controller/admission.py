"""The admission webhooks for Connections, registered only when the
operator serves webhooks (kopf refuses to start with admission handlers and no
server)."""

from __future__ import annotations

from typing import Any

import kopf

from patchbay.controller.connection import Reconciler
from patchbay.controller.handlers import GROUP, VERSION
from patchbay.core.admission import connection_problem


@kopf.on.validate(
    GROUP, VERSION, "connections", id="validate-connection", operations=["CREATE", "UPDATE"]
)
async def validate_connection(
    *, body: kopf.Body, memo: kopf.Memo, old: kopf.Body | None = None, **_: Any
) -> None:
    reconciler: Reconciler = memo["reconciler"]
    spec = dict(body.get("spec") or {})
    connector = await reconciler.connector_spec(body["metadata"]["namespace"], spec)
    old_spec = dict(old.get("spec") or {}) if old is not None else None
    problem = connection_problem(connector, spec, old_spec)
    if problem is not None:
        raise kopf.AdmissionError(problem, code=422)


@kopf.on.mutate(
    GROUP,
    VERSION,
    "connections",
    id="label-connection",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
async def label_connection(
    *, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    # Labelling at admission saves the reconciler a write per Connection; when this
    # webhook is not installed or fails, the reconciler patches the labels instead.
    reconciler: Reconciler = memo["reconciler"]
    wanted = await reconciler.labels_for(
        body["metadata"]["namespace"], body.get("spec") or {}, fresh=True
    )
    labels = body["metadata"].get("labels") or {}
    missing = {k: v for k, v in wanted.items() if labels.get(k) != v}
    if missing:
        patch.setdefault("metadata", {}).setdefault("labels", {}).update(missing)
