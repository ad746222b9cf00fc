"""The token state of an OAuth 2.0 Connection.

Some token endpoints rotate refresh tokens: each refresh answers with a new one and
spends the old (Bullhorn, Doorkeeper servers, Salesforce with rotation on). The
operator keeps what a token endpoint issued in a Secret of its own, owned by the
Connection, and never writes to the user's Secret. Each kept value records which
Secret, key and resourceVersion the value it replaced came from: when the user puts
new credentials into their Secret, the kept one no longer applies.

A Connection may also ask for the current access token in its binding Secret
(spec.binding.accessToken): it is renewed by a verification before it expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from patchbay.api.common import GROUP
from patchbay.api.limits import MIN_INTERVAL_SECONDS
from patchbay.core.binding import owned_secret_metadata
from patchbay.drivers.base import ACCESS_TOKEN_KEY, EXPIRES_AT_FORMAT, EXPIRES_AT_KEY
from patchbay.kube import secret_data, secret_values

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
        "data": secret_data(issued),
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


# Renew this long before expiry at most; a short-lived token a fifth of its life early.
RENEWAL_LEAD_SECONDS = 300.0


def _expiry(values: Mapping[str, str]) -> datetime | None:
    try:
        return datetime.strptime(values[EXPIRES_AT_KEY], EXPIRES_AT_FORMAT).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None


def token_renewal(granted: Mapping[str, str], *, finished: datetime) -> datetime | None:
    """When a verification should renew the access token it put in the binding: before it
    expires, but never sooner than the shortest interval, so a token that lives only
    seconds cannot make a Connection hammer its token endpoint. None without an expiry."""
    expires = _expiry(granted)
    if expires is None:
        return None
    lead = min(RENEWAL_LEAD_SECONDS, max(0.0, (expires - finished).total_seconds()) / 5)
    return max(
        finished + timedelta(seconds=MIN_INTERVAL_SECONDS), expires - timedelta(seconds=lead)
    )


def unexpired_access_token(binding: Mapping[str, str], at: datetime) -> dict[str, str]:
    """The access token and its expiry from a binding's values, if it is still valid at
    ``at``; a token without a known expiry is not kept."""
    expires = _expiry(binding)
    if expires is None or expires <= at or not binding.get(ACCESS_TOKEN_KEY):
        return {}
    return {ACCESS_TOKEN_KEY: binding[ACCESS_TOKEN_KEY], EXPIRES_AT_KEY: binding[EXPIRES_AT_KEY]}
