"""The token state of an OAuth 2.0 Connection.

Some token endpoints rotate refresh tokens: each refresh answers with a new one and
spends the old (Bullhorn, Doorkeeper servers, Salesforce with rotation on). The
operator keeps what a token endpoint issued in a Secret of its own, owned by the
Connection, and never writes to the user's Secret. Each kept value records which
Secret, key and resourceVersion the value it replaced came from: when the user puts
new credentials into their Secret, the kept one no longer applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from patchbay.api.common import GROUP
from patchbay.core.binding import owned_secret_metadata
from patchbay.kube import secret_values

# variable -> "SECRET/KEY@RESOURCEVERSION" of the value each kept one replaced
ISSUED_FOR_ANNOTATION = f"{GROUP}/issued-for"


def token_state_name(connection: str) -> str:
    return f"{connection}-token-state"


def build_token_state(
    *,
    connection: str,
    namespace: str,
    uid: str,
    issued: Mapping[str, str],
    sources: Mapping[str, str],
) -> dict[str, Any]:
    metadata = owned_secret_metadata(token_state_name(connection), connection, namespace, uid)
    metadata["annotations"] = {
        ISSUED_FOR_ANNOTATION: orjson.dumps(
            {variable: sources[variable] for variable in issued if variable in sources},
            option=orjson.OPT_SORT_KEYS,
        ).decode()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": dict(issued),
    }


def standing_values(state: Mapping[str, Any] | None, sources: Mapping[str, str]) -> dict[str, str]:
    """The kept values that still stand: issued in place of exactly the user's values as
    they are now (``sources``, as build_token_state records them)."""
    if state is None:
        return {}
    annotations = (state.get("metadata") or {}).get("annotations") or {}
    try:
        recorded = orjson.loads(annotations.get(ISSUED_FOR_ANNOTATION, "{}"))
    except orjson.JSONDecodeError:
        return {}
    values = secret_values(state)
    return {
        variable: values[variable]
        for variable, source in (recorded.items() if isinstance(recorded, dict) else ())
        if source == sources.get(variable) and variable in values
    }
