"""The admission webhooks for Connections, registered only when the
operator serves webhooks (kopf refuses to start with admission handlers and no
server)."""

from __future__ import annotations

from typing import Any

import kopf

from patchbay.api.common import ALLOWED_CONNECTIONS_ANNOTATION, AUTHORIZATION_ANNOTATION
from patchbay.controller.authorization import first_denied
from patchbay.controller.connection import Reconciler
from patchbay.controller.handlers import GROUP, VERSION
from patchbay.core.admission import connection_problem
from patchbay.core.authorization import admission_record, record_holds, scope, secret_uses


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


@kopf.on.mutate(
    GROUP, VERSION, "connections", id="authorize-connection", operations=["CREATE", "UPDATE"]
)
async def authorize_connection(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    userinfo: kopf.UserInfo,
    old: kopf.Body | None = None,
    **_: Any,
) -> None:
    """Refuse a Connection that references a Secret its writer may not get; stamp the
    others with an admission record, which the operator requires before it uses them
    (see core/authorization.py)."""
    reconciler: Reconciler = memo["reconciler"]
    key = reconciler.admission_key
    meta = body["metadata"]
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    spec = body.get("spec") or {}
    covered = scope(namespace, name, spec)
    record = (meta.get("annotations") or {}).get(AUTHORIZATION_ANNOTATION)

    def set_record(value: str | None) -> None:
        if value != record:
            patch.setdefault("metadata", {}).setdefault("annotations", {})[
                AUTHORIZATION_ANNOTATION
            ] = value

    # Nothing that decides the Secrets' use changed (an edit of labels, annotations,
    # suspend...): the record stays what it was, whatever this request wrote into it.
    unchanged = old is not None and scope(namespace, name, old.get("spec") or {}) == covered
    kept = (old["metadata"].get("annotations") or {}).get(AUTHORIZATION_ANNOTATION) if old else None
    if unchanged and (
        record_holds(key, covered, kept) or userinfo.get("username") == memo.get("own_user")
    ):
        set_record(kept)
        return
    denied = await first_denied(reconciler.client, userinfo, namespace, name, secret_uses(spec))
    if denied is not None:
        if unchanged:
            # by someone who may not read the Secrets: admitted, and without a record
            set_record(None)
            return
        raise kopf.AdmissionError(
            f"{denied.field}: user {userinfo.get('username', '')!r} may not get Secret "
            f"{denied.name!r} (missing permission: get secrets in {namespace!r}), and the "
            f"Secret does not allow this Connection in its {ALLOWED_CONNECTIONS_ANNOTATION} "
            "annotation; a Connection may use only Secrets its author may read",
            code=403,
        )
    if key is not None:
        set_record(admission_record(key, covered))
