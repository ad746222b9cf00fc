"""The validating admission webhook for Connections, registered only when the
operator serves webhooks (kopf refuses to start with admission handlers and no
server)."""

from __future__ import annotations

from typing import Any

import kopf

from patchbay.admission import connection_problem
from patchbay.controller.handlers import GROUP, VERSION
from patchbay.reconciler import Reconciler


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
