"""`patchbay list`: Connections filtered at the API server where it can, then searched,
sorted and cut into pages here.

The API server filters by label (driver) and by the CRD's selectable fields (connector,
phase, reason); a substring search and an order other than by name it cannot do, so
those run on what it returned. The continue token is this command's own: the offset
into the sorted result and a digest of the query it belongs to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from patchbay import kube
from patchbay.api.common import CONNECTOR_LABEL, DRIVER_LABEL
from patchbay.cli.caller import CommandError, explained

SORT_FIELDS = ("name", "created", "lastVerified", "phase")
# Items the API server returns per request while the CLI reads every page.
PAGE_SIZE = 500
MAX_LIMIT = 1000
MAX_SEARCH = 256


@dataclass(frozen=True)
class ListQuery:
    """What the caller asked for; ``sort`` may start with '-' for descending."""

    namespace: str | None  # None: every namespace
    connector: str | None = None
    driver: str | None = None
    phase: str | None = None
    reason: str | None = None
    search: str | None = None
    sort: str = "name"

    def selectors(self) -> dict[str, str]:
        """The label and field selectors that let the API server do the filtering."""
        params: dict[str, str] = {}
        if self.driver:
            params["labelSelector"] = f"{DRIVER_LABEL}={self.driver}"
        fields = [
            f"{path}={value}"
            for path, value in (
                ("spec.connectorRef.name", self.connector),
                ("status.phase", self.phase),
                ("status.reason", self.reason),
            )
            if value
        ]
        if fields:
            params["fieldSelector"] = ",".join(fields)
        return params

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _field(item: Mapping[str, Any], *path: str) -> Any:
    found: Any = item
    for key in path:
        found = (found or {}).get(key) if isinstance(found, Mapping) else None
    return found


def _matches(item: Mapping[str, Any], query: ListQuery) -> bool:
    """The filters, for items the API server returned unfiltered (no selectable fields)."""
    checks = (
        (query.connector, _field(item, "spec", "connectorRef", "name")),
        (query.phase, _field(item, "status", "phase")),
        (query.reason, _field(item, "status", "reason")),
        (query.driver, _field(item, "metadata", "labels", DRIVER_LABEL)),
    )
    return all(wanted is None or wanted == actual for wanted, actual in checks)


def _found(item: Mapping[str, Any], search: str | None) -> bool:
    if not search:
        return True
    needle = search.casefold()
    name = _field(item, "metadata", "name") or ""
    display = _field(item, "spec", "displayName") or ""
    return needle in name.casefold() or needle in display.casefold()


_SORT_KEYS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "name": lambda item: _field(item, "metadata", "name") or "",
    "created": lambda item: _field(item, "metadata", "creationTimestamp") or "",
    "lastVerified": lambda item: _field(item, "status", "verification", "lastSuccessTime") or "",
    "phase": lambda item: _field(item, "status", "phase") or "",
}


def sorted_items(items: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Ordered by the field, then namespace and name, so pages are stable."""
    descending = sort.startswith("-")
    key = _SORT_KEYS[sort.removeprefix("-")]

    def tie(item: Mapping[str, Any]) -> tuple[str, str]:
        return (_field(item, "metadata", "namespace") or "", _field(item, "metadata", "name") or "")

    by_tie = sorted(items, key=tie)
    return sorted(by_tie, key=key, reverse=descending)


def encode_token(offset: int, query: ListQuery) -> str:
    raw = json.dumps({"offset": offset, "query": query.digest()}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: ListQuery) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, digest = int(data["offset"]), data["query"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise CommandError("--continue: not a token printed by 'patchbay list'") from None
    if digest != query.digest() or offset < 0:
        raise CommandError("--continue: the token belongs to a list with other filters or order")
    return offset


def summary(item: Mapping[str, Any]) -> dict[str, Any]:
    labels = _field(item, "metadata", "labels") or {}
    return {
        "name": _field(item, "metadata", "name"),
        "namespace": _field(item, "metadata", "namespace"),
        "displayName": _field(item, "spec", "displayName"),
        "connector": _field(item, "spec", "connectorRef", "name") or labels.get(CONNECTOR_LABEL),
        "driver": labels.get(DRIVER_LABEL),
        "phase": _field(item, "status", "phase"),
        "reason": _field(item, "status", "reason"),
        "lastVerified": _field(item, "status", "verification", "lastSuccessTime"),
        "created": _field(item, "metadata", "creationTimestamp"),
    }


async def _read_all(client: kube.KubeClient, query: ListQuery) -> list[dict[str, Any]]:
    """Every Connection the selectors let through, read page by page; on an API server
    without the CRD's selectable fields, the field filters run here instead."""
    path = (
        kube.connection_path(query.namespace)
        if query.namespace is not None
        else "/apis/patchbay.dev/v1alpha1/connections"
    )
    params = query.selectors()
    filter_here = False
    items: list[dict[str, Any]] = []
    token = ""
    with explained("list", "connections", query.namespace):
        while True:
            page_params = {**params, "limit": str(PAGE_SIZE)}
            if token:
                page_params["continue"] = token
            try:
                page = await client.request("GET", path, params=page_params) or {}
            except kube.KubeApiError as exc:
                # "field label not supported": selectable fields need Kubernetes 1.31+
                if exc.status != 400 or "fieldSelector" not in params or items:
                    raise
                params.pop("fieldSelector")
                filter_here = True
                continue
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                break
    return [item for item in items if not filter_here or _matches(item, query)]


async def list_connections(
    client: kube.KubeClient, query: ListQuery, limit: int | None, continue_token: str | None
) -> dict[str, Any]:
    """A page of the matching Connections, the total, and the token of the next page."""
    if query.sort.removeprefix("-") not in SORT_FIELDS:
        raise CommandError(f"--sort: one of {', '.join(SORT_FIELDS)}, with '-' for descending")
    offset = decode_token(continue_token, query) if continue_token else 0
    found = [item for item in await _read_all(client, query) if _found(item, query.search)]
    ordered = sorted_items(found, query.sort)
    end = len(ordered) if limit is None else offset + limit
    return {
        "items": [summary(item) for item in ordered[offset:end]],
        "total": len(ordered),
        "continue": encode_token(end, query) if end < len(ordered) else None,
    }
