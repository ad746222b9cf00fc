"""Validation of a Connection's config against its connector's variables.

Pure functions: the reconciler and the admission webhook share them, so a
manifest is judged the same way at admission and at reconcile time.

A url variable may name other non-secret variables as ``{key}``, e.g. a
default of ``https://{shop}.myshopify.com``: the placeholders are filled
after defaults are applied, so every consumer (driver, binding Secret) sees
the finished URL, and a Connection can still replace the whole URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from patchbay.api.common import DURATION_PATTERN
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import OAUTH2_GRANTS, ConnectorSpec, VariableSpec
from patchbay.api.patterns import PatternError, fullmatch

ConfigValue = str | int | bool

_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")


class ConfigInvalidError(ValueError):
    """A Connection's config breaks a variable rule. The message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"variable {variable!r}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class ResolvedConfig:
    """Non-secret values after defaults, and the secret variables still to be resolved."""

    values: dict[str, ConfigValue]
    secret_variables: tuple[VariableSpec, ...]


def _describe(value: object) -> str:
    return type(value).__name__ if isinstance(value, list | dict) else repr(value)


def check_value(variable: VariableSpec, value: object) -> ConfigValue:
    """The value coerced to the variable's type; raises ConfigInvalidError."""
    key = variable.key
    if isinstance(value, list | dict) or value is None:
        raise ConfigInvalidError(key, f"must be a {variable.type}, not {_describe(value)}")
    checked: ConfigValue
    if variable.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigInvalidError(key, f"must be an integer, not {_describe(value)}")
        try:
            checked = int(value)
        except ValueError:
            raise ConfigInvalidError(key, f"must be an integer, not {value!r}") from None
        if variable.minimum is not None and checked < variable.minimum:
            raise ConfigInvalidError(key, f"must be at least {variable.minimum}")
        if variable.maximum is not None and checked > variable.maximum:
            raise ConfigInvalidError(key, f"must be at most {variable.maximum}")
    elif variable.type == "boolean":
        if isinstance(value, bool):
            checked = value
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            checked = value.lower() == "true"
        else:
            raise ConfigInvalidError(key, f"must be a boolean, not {_describe(value)}")
    else:
        if not isinstance(value, str):
            kind = "a string" if variable.type == "string" else f"a {variable.type} string"
            raise ConfigInvalidError(key, f"must be {kind}, not {value!r}")
        checked = value
        if variable.type == "url":
            try:
                parts = urlsplit(value)
                has_host = bool(parts.hostname)
            except ValueError:  # e.g. an unclosed IPv6 bracket
                has_host = False
            if not has_host or parts.scheme not in ("http", "https"):
                raise ConfigInvalidError(key, "must be an http or https URL with a host")
        elif variable.type == "duration" and not re.fullmatch(DURATION_PATTERN, value):
            raise ConfigInvalidError(key, f"must be a duration such as 30s or 5m, not {value!r}")
        if variable.pattern is not None and not _matches(variable, variable.pattern, value):
            raise ConfigInvalidError(key, f"does not match the pattern {variable.pattern!r}")
    if variable.enum is not None and checked not in variable.enum:
        allowed = ", ".join(str(v) for v in variable.enum)
        raise ConfigInvalidError(key, f"must be one of {allowed}")
    return checked


def _matches(variable: VariableSpec, pattern: str, value: str) -> bool:
    """Linear-time match (RE2); a pattern the connector should never have had is reported."""
    try:
        return fullmatch(pattern, value)
    except PatternError as exc:
        raise ConfigInvalidError(variable.key, f"has a pattern that {exc}") from None


class NotAllowedError(ConfigInvalidError):
    """A Connection asks for something its connector does not allow; the message names
    the field of spec."""

    def __init__(self, field: str, problem: str) -> None:
        ValueError.__init__(self, f"{field}: {problem}")
        self.variable = field


def _is_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def allow_connection_options(connector: ConnectorSpec, connection: ConnectionSpec) -> None:
    """Raise NotAllowedError for what the Connection adds that the connector does not
    allow: checks or a verification request of its own, an access token in its binding
    without an OAuth 2.0 grant to get one, or a schedule in a time zone that does not
    exist."""
    verification = connector.verification
    if connection.verification.checks and not verification.allow_connection_checks:
        raise NotAllowedError(
            "spec.verification.checks",
            "this connector does not allow Connections to add checks (its "
            "spec.verification.allowConnectionChecks is false)",
        )
    request = connection.verification.http
    if request is not None:
        if connector.driver != "http" or not verification.allow_connection_request:
            raise NotAllowedError(
                "spec.verification.http",
                "this connector does not allow Connections a verification request of their "
                "own (its spec.verification.allowConnectionRequest is false)",
            )
        if request.credential is not None and connector.auth.type not in ("bearer", "apiKey"):
            raise NotAllowedError(
                "spec.verification.http.credential",
                f"places a bearer token or API key; this connector's auth is {connector.auth.type}",
            )
    zone_field, zone = (
        ("spec.verification.timeZone", connection.verification.time_zone)
        if connection.verification.time_zone
        else ("the connector's timeZone", connector.time_zone)
    )
    if connection.verification.schedule and not _is_time_zone(zone):
        raise NotAllowedError(zone_field, f"{zone!r} is not a time zone of the IANA database")
    binding = connection.binding
    if binding is not None and binding.access_token and connector.auth.type not in OAUTH2_GRANTS:
        raise NotAllowedError(
            "spec.binding.accessToken",
            f"needs a connector with an OAuth 2.0 grant; this one's auth is {connector.auth.type}",
        )


def resolve_config(connector: ConnectorSpec, config: Mapping[str, object]) -> ResolvedConfig:
    """Apply defaults and every variable rule. Never echoes a secret value back."""
    variables = {v.key: v for v in connector.variables}
    for key in sorted(config):
        variable = variables.get(key)
        if variable is None:
            raise ConfigInvalidError(key, "is not a variable of this connector")
        if variable.secret:
            # The value is deliberately not repeated: it is a credential.
            raise ConfigInvalidError(
                key, "is secret and must come from a Secret (spec.credentials), not spec.config"
            )
        if variable.locked and config[key] != variable.default:
            raise ConfigInvalidError(key, "is locked by the connector and cannot be overridden")
    values: dict[str, ConfigValue] = {}
    for variable in connector.variables:
        if variable.secret:
            continue
        raw = config.get(variable.key, variable.default)
        if raw is None:
            if variable.required:
                raise ConfigInvalidError(variable.key, "is required")
            continue
        values[variable.key] = check_value(variable, raw)
    for variable in connector.variables:
        value = values.get(variable.key)
        if variable.type == "url" and isinstance(value, str) and "{" in value:
            values[variable.key] = _fill_placeholders(variable, value, values, variables)
    secret_variables = tuple(v for v in connector.variables if v.secret)
    return ResolvedConfig(values=values, secret_variables=secret_variables)


def _fill_placeholders(
    variable: VariableSpec,
    template: str,
    values: Mapping[str, ConfigValue],
    variables: Mapping[str, VariableSpec],
) -> str:
    """The url with each {key} replaced by that variable's URL-quoted value."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        named = variables.get(key)
        if named is None or named.secret or named.type == "url":
            # Secrets never go into a URL (URLs end up in logs and messages).
            raise ConfigInvalidError(
                variable.key,
                f"names {{{key}}}, which is not a non-secret string, integer or boolean variable",
            )
        if key not in values:
            raise ConfigInvalidError(key, f"needs a value: {variable.key} uses it")
        value = values[key]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return quote(text, safe="")

    filled = _PLACEHOLDER.sub(fill, template)
    if "{" in filled or "}" in filled:
        raise ConfigInvalidError(variable.key, "has a malformed {placeholder}")
    return str(check_value(variable, filled))
