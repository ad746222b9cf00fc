"""Connection: one configured, verified link to an external system."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from patchbay.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    ApiModel,
    Condition,
    Interval,
    LocalObjectReference,
    ScalarValue,
    SecretKeySelector,
    Timeout,
    cel,
    validation_rules,
)
from patchbay.api.connector import (
    TIME_ZONE_PATTERN,
    CheckSpec,
    CheckType,
    CredentialPlacement,
    HttpRequestSpec,
    ObjectMeta,
)

VerificationMode = Literal["Periodic", "OnChange", "Manual"]
Phase = Literal["Pending", "Ready", "Failed", "Suspended"]
VerificationResult = Literal["Succeeded", "Failed", "Unknown"]
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"


class ConnectorReference(ApiModel):
    """Which template this Connection instantiates."""

    kind: Literal["Connector", "ClusterConnector"] = Field(
        default="ClusterConnector",
        description="ClusterConnector (shared by all namespaces) or Connector (this namespace).",
    )
    name: str = Field(min_length=1, max_length=253, description="Name of the connector.")


class CredentialItem(ApiModel):
    """One secret variable taken from a key of any Secret in the namespace."""

    key: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z][a-zA-Z0-9_]*$",
        description="The secret variable this value fills.",
    )
    secret_key_ref: SecretKeySelector = Field(description="Where the value is stored.")


class CredentialsSpec(ApiModel):
    """Where the secret variables come from. Values are never copied into status."""

    secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="A Secret whose keys are named after the connector's secret variables.",
    )
    items: list[CredentialItem] = Field(
        default_factory=list,
        max_length=64,
        description="Per-variable sources; these win over secretRef.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
        },
    )


class CaSecretReference(ApiModel):
    """A CA bundle in a Secret."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(default="ca.crt", min_length=1, max_length=253, description="Key of the PEM.")


class TlsSpec(ApiModel):
    """TLS settings for drivers that speak TLS."""

    ca_secret_ref: CaSecretReference | None = Field(
        default=None,
        description="CA certificate (PEM) that verifies the server. The database drivers "
        "trust only this CA; the http and s3 drivers trust it in addition to the system "
        "store, so public token endpoints still verify.",
    )
    client_cert_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret (tls.crt, tls.key) presented as client "
        "certificate.",
    )
    server_name: str | None = Field(
        default=None, max_length=253, description="Override the name checked in the certificate."
    )


class ConnectionHttpRequest(HttpRequestSpec):
    """A Connection's own verification request, where its connector allows one."""

    credential: CredentialPlacement | None = Field(
        default=None,
        description="Where the bearer token or API key goes, instead of where the connector "
        "puts it, e.g. {in: header, name: X-Api-Key} or {in: query, name: api_key}.",
    )


class BindingSpec(ApiModel):
    """What the binding Secret carries beyond the connector's variables."""

    access_token: bool = Field(
        default=False,
        description="OAuth 2.0 connectors: also the current access token (key accessToken) "
        "and its expiry (accessTokenExpiresAt, RFC 3339), renewed by a verification before "
        "the token expires, so workloads need no refresh logic of their own.",
    )
    keep_while_suspended: bool = Field(
        default=False,
        description="Leave the credentials in the binding while spec.suspend is true, so that "
        "suspending pauses only the operator's own calls; by default a suspended Connection's "
        "binding holds no credentials until it is resumed and verified again.",
    )


class ConnectionVerificationSpec(ApiModel):
    """When and how the operator verifies this Connection."""

    model_config = validation_rules(
        cel(
            "!(has(self.interval) && has(self.schedule))",
            "interval and schedule are mutually exclusive",
        ),
        cel(
            "self.mode == 'Periodic' || !(has(self.interval) || has(self.schedule))",
            "interval and schedule apply only to mode Periodic",
        ),
        cel("!has(self.timeZone) || has(self.schedule)", "timeZone applies only to a schedule"),
    )

    mode: VerificationMode = Field(
        default="Periodic",
        description="Periodic re-verifies on a schedule and on change; OnChange only when "
        "inputs change; Manual once at creation, then only on request (annotation "
        "patchbay.dev/verify-requested-at).",
    )
    interval: Interval | None = Field(
        default=None,
        description="Re-verification period, at least 1m; defaults to the connector's.",
    )
    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=CRON_PATTERN,
        description="Cron schedule (5 fields or @hourly-style), instead of interval.",
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of the schedule, e.g. Europe/Berlin, as in a CronJob; "
        "defaults to the connector's timeZone, UTC unless it says otherwise.",
    )
    timeout: Timeout | None = Field(
        default=None,
        description="Time limit for one verification, at most 2m; defaults to the connector's.",
    )
    checks: list[CheckSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Capability checks run after login, in addition to the connector's.",
    )
    http: ConnectionHttpRequest | None = Field(
        default=None,
        description="http driver: the request that proves the connection works, in place of "
        "the connector's, where the connector allows it (allowConnectionRequest).",
    )


class ConnectionSpec(ApiModel):
    """Desired state of a Connection."""

    connector_ref: ConnectorReference = Field(description="The connector this instantiates.")
    display_name: str | None = Field(
        default=None, max_length=256, description="Human name, shown by kubectl get -o wide."
    )
    description: str | None = Field(default=None, max_length=4096, description="What it is for.")
    config: dict[str, ScalarValue] = Field(
        default_factory=dict,
        description="Values of non-secret variables, by variable key: each a string (at most "
        "4096 characters), an integer or a boolean.",
        json_schema_extra={"maxProperties": 128},
    )
    credentials: CredentialsSpec | None = Field(
        default=None, description="Sources of the secret variables."
    )
    tls: TlsSpec | None = Field(default=None, description="TLS trust and client certificate.")
    verification: ConnectionVerificationSpec = Field(
        default_factory=ConnectionVerificationSpec, description="Verification settings."
    )
    binding: BindingSpec | None = Field(
        default=None, description="What the binding Secret carries besides the variables."
    )
    suspend: bool = Field(
        default=False,
        description="Disable the Connection: the operator makes no call to the external system "
        "and the binding Secret holds no credentials (unless binding.keepWhileSuspended), "
        "until this is false again and a verification has succeeded.",
    )
    default: bool = Field(
        default=False,
        description="The default Connection of its connector in this namespace; the oldest "
        "claim wins.",
    )


class VerificationError(ApiModel):
    """A classified failure."""

    code: str = Field(max_length=64, description="Reason code, e.g. AuthenticationFailed.")
    message: str = Field(default="", max_length=4096, description="What went wrong.")
    retryable: bool = Field(
        default=True, description="Whether retrying without a change can succeed."
    )


class VerificationDetails(ApiModel):
    """Safe facts learned while verifying."""

    server_version: str | None = Field(
        default=None, max_length=256, description="Version the server reports."
    )
    latency_ms: int | None = Field(default=None, ge=0, description="Round trip of the login.")


class CheckResult(ApiModel):
    """Outcome of one capability check."""

    type: CheckType = Field(description="Kind of check.")
    target: str = Field(
        default="", max_length=1024, description="What was checked (query, table, path, URL)."
    )
    result: VerificationResult = Field(description="Succeeded, Failed or Unknown.")
    code: str = Field(max_length=64, description="Reason code.")
    message: str = Field(default="", max_length=4096, description="Details.")


class VerificationStatus(ApiModel):
    """The latest verification."""

    last_attempt_time: datetime | None = Field(default=None, description="Start of last attempt.")
    last_success_time: datetime | None = Field(default=None, description="Last success.")
    next_time: datetime | None = Field(default=None, description="Next scheduled attempt.")
    duration_ms: int | None = Field(default=None, ge=0, description="Length of last attempt.")
    consecutive_failures: int = Field(default=0, ge=0, description="Failures since a success.")
    inputs_hash: str | None = Field(
        default=None,
        max_length=128,
        description="Hash of resolved config, connector generation and Secret resourceVersions.",
    )
    result: VerificationResult | None = Field(default=None, description="Outcome.")
    error: VerificationError | None = Field(
        default=None, description="Set when result is not Succeeded."
    )
    details: VerificationDetails | None = Field(default=None, description="Safe server facts.")
    checks: list[CheckResult] = Field(
        default_factory=list, max_length=64, description="Per-check outcomes."
    )
    requested_at: str | None = Field(
        default=None,
        max_length=256,
        description="The patchbay.dev/verify-requested-at annotation this result answers.",
    )


class BindingStatus(ApiModel):
    """The Service Binding Secret (servicebinding.io's Provisioned Service duck type)."""

    name: str = Field(min_length=1, max_length=253, description="Name of the binding Secret.")
    credentials_withheld: bool | None = Field(
        default=None,
        description="The binding holds no credentials: the Connection is suspended, or has "
        "not been verified since it was resumed.",
    )


class SecretFieldStatus(ApiModel):
    """Whether a secret variable has a value. Never the value."""

    configured: bool = Field(description="A value was found for this secret variable.")


class ConnectionStatus(ApiModel):
    """Observed state of a Connection."""

    phase: Phase | None = Field(default=None, description="Summary for humans.")
    reason: str | None = Field(
        default=None,
        max_length=64,
        description="The Ready condition's reason, e.g. AuthenticationFailed, as a field that "
        "field selectors can match.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="ConnectorResolved, CredentialsResolved, Verified and the summary Ready.",
        json_schema_extra=CONDITIONS_SCHEMA_EXTRA,
    )
    verification: VerificationStatus | None = Field(default=None, description="Last result.")
    has_credentials: bool | None = Field(default=None, description="All secret fields are set.")
    secret_fields: dict[str, SecretFieldStatus] = Field(
        default_factory=dict, description="Which secret variables are configured."
    )
    binding: BindingStatus | None = Field(
        default=None, description="The Service Binding Secret projected for workloads."
    )
    is_default: bool | None = Field(
        default=None, description="This is the default Connection of its connector."
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Generation seen.")


class Connection(ApiModel):
    """A configured link to an external system, verified by the operator."""

    model_config = ConfigDict(extra="ignore")

    api_version: str | None = None
    kind: Literal["Connection"] = "Connection"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ConnectionSpec
    status: ConnectionStatus | None = None
