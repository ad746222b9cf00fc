"""Building blocks shared by the patchbay API kinds."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from patchbay.api.limits import (
    MAX_TIMEOUT,
    MAX_TIMEOUT_SECONDS,
    MIN_INTERVAL,
    MIN_INTERVAL_SECONDS,
    MIN_RATE_LIMIT_PERIOD,
    MIN_RATE_LIMIT_PERIOD_SECONDS,
)

GROUP = "patchbay.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# labels the operator sets on every Connection, so `kubectl get -l` filters by them
CONNECTOR_LABEL = f"{GROUP}/connector"
DRIVER_LABEL = f"{GROUP}/driver"
# changing this annotation asks for a verification now
VERIFY_REQUESTED_ANNOTATION = f"{GROUP}/verify-requested-at"
# the admission record of a Connection: proof that its author may read the Secrets it uses
AUTHORIZATION_ANNOTATION = f"{GROUP}/authorization"
# on a Secret: the Connections of its namespace that may use it ("*": all of them)
ALLOWED_CONNECTIONS_ANNOTATION = f"{GROUP}/allowed-connections"

# Go-style durations limited to the units that make sense for network checks.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

DURATION_MAX_LENGTH = 32

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=DURATION_MAX_LENGTH,
        examples=["10s", "15m", "1h30m"],
    ),
]

_DURATION_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def duration_seconds(text: str) -> float:
    """Seconds in a duration that matches DURATION_PATTERN, e.g. '1h30m' or '500ms'."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _DURATION_UNIT_SECONDS[u] for n, u in parts)


# Longest string a config value, a variable default or an enum entry may hold.
MAX_VALUE_LENGTH = 4096


def _short_enough(value: str | int | bool) -> str | int | bool:
    if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"must be at most {MAX_VALUE_LENGTH} characters")
    return value


# A config value may be a string, an integer or a boolean. A structural CRD
# schema cannot express a union of scalar types, and CEL cannot see untyped
# content (a rule on it does not compile). So the value stays untyped, and
# value validations that apply only to one JSON type refuse the rest: every
# object has fewer than one or more than zero properties, every list fewer
# than one or more than zero items, and a number with a fraction is no
# multiple of 1. Strings, integers and booleans pass them all; null is pruned.
# The API server's error names the key (spec.config.<key>). Objects stored
# before these rules are still reported by the reconciler as ConfigInvalid.
ScalarValue = Annotated[
    str | int | bool,
    AfterValidator(_short_enough),
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            "maxLength": MAX_VALUE_LENGTH,
            "minProperties": 1,
            "maxProperties": 0,
            "minItems": 1,
            "maxItems": 0,
            "multipleOf": 1,
        }
    ),
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validation_rules(*rules: dict[str, Any]) -> ConfigDict:
    """Model config that attaches CEL rules to the model's schema in the CRD."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


def _duration_rule(rule: str, message: str) -> Any:
    """A Go-style duration field whose bound is a CEL rule on the field itself, so the API
    server's error names the field. CEL's duration() parses the same syntax; the guard
    keeps a value the pattern already refuses from a second, confusing error."""
    guarded = f"!self.matches(r'{DURATION_PATTERN}') || ({rule})"
    return Field(
        pattern=DURATION_PATTERN,
        max_length=DURATION_MAX_LENGTH,
        examples=["10s", "15m", "1h30m"],
        json_schema_extra={"x-kubernetes-validations": [cel(guarded, message)]},
    )


ADMISSION: dict[str, Any] = {"admission": True}
"""Validation context for a manifest on its way in (a webhook, a CLI check): the bounds on
durations are enforced, as the CRD enforces them. Without it a stored object parses even
when it predates a bound, and the operator clamps the value and says so
(patchbay.core.schedule.bounds), instead of giving up on every Connection it serves."""


def admission_check(within: Callable[[Any], bool], message: str) -> AfterValidator:
    """A bound the CRD enforces, enforced by the model under the ADMISSION context."""

    def check(value: Any, info: ValidationInfo) -> Any:
        admission = isinstance(info.context, dict) and info.context.get("admission") is True
        if admission and not within(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


_AT_LEAST_INTERVAL = f"must be at least {MIN_INTERVAL}"
_AT_LEAST_PERIOD = f"must be at least {MIN_RATE_LIMIT_PERIOD}"
_WITHIN_TIMEOUT = f"must be more than 0s and at most {MAX_TIMEOUT}"

# A re-verification period: a shorter one turns verification into a request storm.
Interval = Annotated[
    str,
    _duration_rule(f"duration(self) >= duration('{MIN_INTERVAL}')", _AT_LEAST_INTERVAL),
    admission_check(
        lambda text: duration_seconds(text) >= MIN_INTERVAL_SECONDS, _AT_LEAST_INTERVAL
    ),
]

# The period of a rate limit: a bucket refilled faster is no limit at all.
RateLimitPeriod = Annotated[
    str,
    _duration_rule(f"duration(self) >= duration('{MIN_RATE_LIMIT_PERIOD}')", _AT_LEAST_PERIOD),
    admission_check(
        lambda text: duration_seconds(text) >= MIN_RATE_LIMIT_PERIOD_SECONDS, _AT_LEAST_PERIOD
    ),
]

# How long one verification may hold a concurrency slot.
Timeout = Annotated[
    str,
    _duration_rule(
        f"duration(self) > duration('0s') && duration(self) <= duration('{MAX_TIMEOUT}')",
        _WITHIN_TIMEOUT,
    ),
    admission_check(
        lambda text: 0 < duration_seconds(text) <= MAX_TIMEOUT_SECONDS, _WITHIN_TIMEOUT
    ),
]


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields rejected."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it: camelCase, no unset fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the referenced object.")


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret's data.",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """An observation of one aspect of the object's state (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition; "
        "see docs/reasons.md.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was set from.",
    )


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
