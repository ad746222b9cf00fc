"""What the operator keeps between events: a compact record per Connection, the
connectors it refers to, and which Connections read which Secrets.

Never a watched body and never a Secret's data; the records hold compact JSON and
the few fields decisions need, so 10,000 Connections fit in a small process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from patchbay.api.common import CONNECTOR_LABEL, DRIVER_LABEL
from patchbay.api.connection import ConnectionStatus
from patchbay.core.resolve import ConnectorKey
from patchbay.core.status import Findings

Key = tuple[str, str]  # namespace, name


def compact(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def resource_version_older(new: str | None, known: str | None) -> bool:
    """An event older than what is known. resourceVersions are opaque by contract but
    etcd's are increasing integers; anything else is taken as newer."""
    if new is None or known is None or not new.isdigit() or not known.isdigit():
        return False
    return int(new) < int(known)


def our_labels(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The labels the operator maintains, as a compact comparable tuple."""
    return tuple(
        sorted((k, v) for k, v in (labels or {}).items() if k in (CONNECTOR_LABEL, DRIVER_LABEL))
    )


@dataclass(slots=True)
class Tracked:
    """What the operator keeps of one Connection: compact JSON of its spec and status,
    the metadata decisions need, and what it decided. Never the watched body."""

    uid: str
    created: str
    generation: int | None
    resource_version: str | None
    labels: tuple[tuple[str, str], ...]
    requested: str | None
    spec_json: bytes
    status_json: bytes
    loaded: bool = False  # handled_* taken from the stored status once
    handled_hash: str | None = None
    handled_request: str | None = None
    binding_digest: str | None = None
    secrets: tuple[str, ...] = ()
    connector: ConnectorKey | None = None
    findings: Findings | None = None
    authorization: str | None = None  # the admission record annotation
    token_state: bool = False  # its token state Secret written by this process

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = orjson.loads(self.spec_json)
        return spec

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = orjson.loads(self.status_json)
        return status

    def observed(self) -> ConnectionStatus:
        """The stored status, read through the model it was written with."""
        try:
            return ConnectionStatus.model_validate(self.status)
        except ValidationError:
            return ConnectionStatus()  # not written by this operator: judged afresh


class Cache:
    """The records, and two indexes over them: Connections by connector (the exact
    counts on connector status) and by the Secrets they read (a rotation finds its
    readers without a scan)."""

    def __init__(self) -> None:
        self.tracked: dict[Key, Tracked] = {}
        self.connectors: dict[ConnectorKey, dict[str, Any] | None] = {}
        self.by_connector: dict[ConnectorKey, set[Key]] = defaultdict(set)
        self.secret_versions: dict[Key, str | None] = {}
        self.secret_readers: dict[Key, set[Key]] = defaultdict(set)

    def index(
        self, key: Key, record: Tracked, ckey: ConnectorKey | None, names: Iterable[str]
    ) -> list[ConnectorKey]:
        """File the Connection under its connector and the Secrets it reads (None and
        none: under nothing, as when it is gone). Returns the connectors whose count
        changed."""
        recount: list[ConnectorKey] = []
        if record.connector != ckey:
            if record.connector is not None:
                self.by_connector[record.connector].discard(key)
                recount.append(record.connector)
            if ckey is not None:
                self.by_connector[ckey].add(key)
                recount.append(ckey)
            record.connector = ckey
        wanted = tuple(sorted(set(names)))
        for old in set(record.secrets) - set(wanted):
            readers = self.secret_readers.get((key[0], old))
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self.secret_readers[(key[0], old)]
                    self.secret_versions.pop((key[0], old), None)
        for new in wanted:
            self.secret_readers[(key[0], new)].add(key)
        record.secrets = wanted
        return recount

    def count(self, ckey: ConnectorKey) -> int:
        return len(self.by_connector.get(ckey, ()))
