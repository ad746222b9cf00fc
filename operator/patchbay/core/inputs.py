"""The inputs hash: what a verification result depends on.

A verification is repeated as soon as this hash changes: the Connection's
spec (except suspend and default, which do not change what is verified), the
connector's identity and generation, and the resourceVersions of the Secrets
it reads. resourceVersions stand in for contents, so the hash never depends on
a secret value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def inputs_hash(
    spec: Mapping[str, Any],
    connector_uid: str | None,
    connector_generation: int | None,
    secret_versions: Mapping[str, str | None],
    admission_record: str | None = None,
) -> str:
    relevant = {k: v for k, v in spec.items() if k not in ("suspend", "default")}
    document = {
        "spec": relevant,
        "connector": [connector_uid, connector_generation],
        "secrets": dict(sorted(secret_versions.items())),
    }
    if admission_record is not None:  # a new record may authorise what was refused
        document["admission"] = admission_record
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
