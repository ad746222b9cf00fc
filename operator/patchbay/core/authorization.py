"""Whether a Connection may use the Secrets it references.

The operator may read every Secret; a Connection's author may not. So a Secret is
used only when its use was authorised, in one of two ways:

- At admission, a SubjectAccessReview proved that the user who wrote the
  Connection may ``get`` every Secret it references. The webhook then stamps the
  Connection with an admission record: an HMAC, under a key only the operator
  holds, of everything that decides which Secrets are read and where their values
  go (namespace, name, connector, config, credentials, TLS, checks). Any later
  change of those fields without the webhook breaks the record.
- The Secret opts in: its ``patchbay.dev/allowed-connections`` annotation names
  the Connection (or says ``*``). Whoever may change the Secret may grant this.

Pure functions over raw objects: the mutating webhook sees a Connection before
the schema has validated it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from patchbay.api.common import ALLOWED_CONNECTIONS_ANNOTATION

RECORD_VERSION = "v1"
# the spec fields that decide which Secrets are read and where their values go
_SCOPE_FIELDS = ("connectorRef", "config", "credentials", "tls")


@dataclass(frozen=True)
class SecretUse:
    """A Secret a Connection references, and the field that references it."""

    name: str
    field: str


def secret_uses(spec: Mapping[str, Any]) -> list[SecretUse]:
    """Every Secret the spec references, first reference first, each name once."""
    uses: list[SecretUse] = []
    credentials = _mapping(spec.get("credentials"))
    ref = _mapping(credentials.get("secretRef"))
    _add(uses, ref.get("name"), "spec.credentials.secretRef")
    items = credentials.get("items")
    for index, item in enumerate(items if isinstance(items, list) else []):
        selector = _mapping(_mapping(item).get("secretKeyRef"))
        _add(uses, selector.get("name"), f"spec.credentials.items[{index}].secretKeyRef")
    tls = _mapping(spec.get("tls"))
    for field in ("caSecretRef", "clientCertSecretRef"):
        _add(uses, _mapping(tls.get(field)).get("name"), f"spec.tls.{field}")
    return uses


def scope(namespace: str, name: str, spec: Mapping[str, Any]) -> bytes:
    """What an admission record covers, canonically encoded."""
    covered = {field: spec.get(field) for field in _SCOPE_FIELDS}
    covered["checks"] = _mapping(spec.get("verification")).get("checks")
    return orjson.dumps(
        {"namespace": namespace, "name": name, "spec": covered}, option=orjson.OPT_SORT_KEYS
    )


def admission_record(key: bytes, covered: bytes) -> str:
    digest = hmac.new(key, covered, hashlib.sha256).hexdigest()
    return f"{RECORD_VERSION}:{digest}"


def record_holds(key: bytes | None, covered: bytes, record: str | None) -> bool:
    """The record was made with ``key`` for exactly this scope."""
    if key is None or not record:
        return False
    return hmac.compare_digest(admission_record(key, covered), record)


def opted_in(annotations: Mapping[str, str] | None, connection: str) -> bool:
    """The Secret's annotation allows this Connection to use it."""
    value = (annotations or {}).get(ALLOWED_CONNECTIONS_ANNOTATION, "")
    names = {part.strip() for part in value.split(",")}
    return "*" in names or connection in names


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _add(uses: list[SecretUse], name: Any, field: str) -> None:
    if isinstance(name, str) and name and all(use.name != name for use in uses):
        uses.append(SecretUse(name, field))
