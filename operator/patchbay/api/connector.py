"""Connector and ClusterConnector: reusable templates for one external system."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from patchbay.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    ApiModel,
    Condition,
    Interval,
    RateLimitPeriod,
    ScalarValue,
    Timeout,
    admission_check,
    cel,
    validation_rules,
)
from patchbay.api.patterns import MAX_PATTERN_LENGTH, PatternError, compile_pattern


def _registered_drivers(schema: JsonDict) -> None:
    """The schema lists the registered drivers, so the API server refuses any other.

    The registry is imported only when a schema is made (for the CRDs), since the drivers
    import these models; an object stored with a driver this build lacks is read all the
    same and makes its connector ConnectorInvalid.
    """
    from patchbay.drivers.registry import driver_names

    schema["enum"] = list(driver_names())


# A driver registered in patchbay.drivers.registry, e.g. postgres.
DriverName = Annotated[str, Field(json_schema_extra=_registered_drivers)]
AuthType = Literal[
    "none",
    "password",
    "basic",
    "bearer",
    "apiKey",
    "oauth2ClientCredentials",
    "oauth2RefreshToken",
    "awsAccessKey",
    "sshKey",
    "tlsClientCert",
]
# The auth types that get an access token from a token endpoint.
OAUTH2_GRANTS: frozenset[str] = frozenset({"oauth2ClientCredentials", "oauth2RefreshToken"})
VariableType = Literal["string", "integer", "boolean", "url", "duration"]
CheckType = Literal["query", "table", "listFiles", "readObject", "http"]
HttpMethod = Literal["GET", "HEAD", "POST"]

VARIABLE_KEY_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_]*$"
# An IANA zone name as a CronJob's timeZone takes it; whether it exists is checked where
# the zone database is (admission and reconcile), like the API server does for CronJobs.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


class CredentialPlacement(ApiModel):
    """Where a credential (an API key, an OAuth 2.0 access token) is sent."""

    model_config = validation_rules(
        # `in` is a CEL keyword, hence the escaped name.
        cel(
            "self.__in__ == 'header' || !has(self.prefix)",
            "prefix applies only to a header; a query parameter carries the value alone",
        ),
    )

    in_: Literal["header", "query"] = Field(
        default="header",
        alias="in",
        description="Send it in a request header or in the query string.",
    )
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Header or query parameter name, e.g. X-Api-Key or access_token.",
    )
    prefix: str | None = Field(
        default=None,
        max_length=64,
        description="Text put before the value, e.g. 'Token ' (header only).",
    )


class BearerAuth(ApiModel):
    """How a bearer token is sent."""

    header: str = Field(
        default="Authorization",
        min_length=1,
        max_length=256,
        description="Header that carries the token.",
    )
    prefix: str = Field(default="Bearer ", max_length=64, description="Text before the token.")


class ClientAssertion(ApiModel):
    """A JWT the operator signs with the Connection's private key to authenticate the client
    at the token endpoint (RFC 7523 section 2.2): iss and sub are the client id, aud the
    token URL, with a fresh jti and an expiry 5 minutes on."""

    algorithm: Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "RS256"] = Field(
        default="PS256",
        description="Signature algorithm (RFC 7518): PS* and RS256 need an RSA key of at "
        "most 8192 bits, ES256/ES384/ES512 an EC key on P-256/P-384/P-521.",
    )
    key_id: str | None = Field(
        default=None,
        max_length=256,
        description="The kid header, by which the vendor finds the public key; may be a "
        "{variable} placeholder of a non-secret variable, e.g. '{certificateId}'.",
    )
    scope_claim: bool = Field(
        default=False,
        description="Send the scopes in the assertion's scope claim, comma-separated, rather "
        "than in the form (NetSuite's machine-to-machine flow).",
    )


class OAuth2Auth(ApiModel):
    """OAuth 2.0 token endpoint settings for the client-credentials and refresh-token grants."""

    model_config = validation_rules(
        cel(
            "(self.clientAuth == 'privateKeyJwt') == has(self.clientAssertion)",
            "clientAssertion is required with clientAuth privateKeyJwt, and allowed only then",
        ),
    )

    token_url: str = Field(
        min_length=1,
        max_length=2048,
        description="Token endpoint: a path on the base URL ('/oauth/token') or an absolute "
        "URL. Both may contain {variable} placeholders of non-secret variables, filled "
        "URL-quoted; a placeholder that opens an absolute URL holds a whole URL, e.g. "
        "'{instanceUrl}/services/oauth2/token' or "
        "'https://login.example.com/{tenant}/oauth2/token'.",
    )
    scopes: list[str] = Field(default_factory=list, max_length=64, description="Scopes to request.")
    audience: str | None = Field(default=None, max_length=2048, description="Optional audience.")
    client_auth: Literal["body", "basic", "privateKeyJwt"] = Field(
        default="body",
        description="How the client authenticates: its id and secret in the form body or "
        "as HTTP basic auth, or privateKeyJwt, a signed JWT assertion (RFC 7523) made "
        "with the secret variable privateKey instead of a client secret.",
    )
    client_assertion: ClientAssertion | None = Field(
        default=None, description="The signed assertion, with clientAuth privateKeyJwt."
    )
    access_token: CredentialPlacement | None = Field(
        default=None,
        description="Where API requests carry the access token, for APIs that do not take "
        "it as 'Authorization: Bearer' (the default), e.g. {in: header, name: "
        "x-amz-access-token} or {in: query, name: access_token}.",
    )
    follow_redirects: bool = Field(
        default=False,
        description="Follow the token endpoint's 307 and 308 redirects (a data centre "
        "sending the client to its own), resending the grant. Only with spec.egress.hosts, "
        "which bound where the client secret may go; off, a redirect is a ProtocolError.",
    )


class AuthSpec(ApiModel):
    """How the external system authenticates. Credential values always come from Secrets.

    Each type reads conventional secret variables: password and basic use
    `username` and `password`; bearer uses `token`; apiKey uses `apiKey`;
    oauth2ClientCredentials uses `clientId` and `clientSecret`, or `privateKey`
    with clientAuth privateKeyJwt;
    oauth2RefreshToken uses `clientId`, `refreshToken` and, unless the client
    is public, `clientSecret`; awsAccessKey uses `accessKeyId` and
    `secretAccessKey`; sshKey uses `username` and `privateKey`; tlsClientCert
    uses `clientCert` and `clientKey` (PEM) or the Connection's
    spec.tls.clientCertSecretRef.
    """

    model_config = validation_rules(
        cel(
            "self.type != 'apiKey' || has(self.apiKey)",
            "auth.apiKey is required when auth.type is apiKey",
        ),
        cel(
            "!(self.type in ['oauth2ClientCredentials', 'oauth2RefreshToken']) || has(self.oauth2)",
            "auth.oauth2 is required when auth.type is an OAuth 2.0 grant",
        ),
        cel(
            "!has(self.apiKey) || self.type == 'apiKey'",
            "auth.apiKey is only allowed when auth.type is apiKey",
        ),
        cel(
            "!has(self.bearer) || self.type == 'bearer'",
            "auth.bearer is only allowed when auth.type is bearer",
        ),
    )

    type: AuthType = Field(default="none", description="Authentication scheme.")
    api_key: CredentialPlacement | None = Field(
        default=None, description="Settings for type apiKey."
    )
    bearer: BearerAuth | None = Field(default=None, description="Settings for type bearer.")
    oauth2: OAuth2Auth | None = Field(
        default=None,
        description="Settings for types oauth2ClientCredentials and oauth2RefreshToken.",
    )


class VariableSpec(ApiModel):
    """One value a Connection provides (host, port, database, region, ...)."""

    model_config = validation_rules(
        cel(
            "!has(self.minimum) || !has(self.maximum) || self.minimum <= self.maximum",
            "minimum must not be greater than maximum",
        ),
        cel(
            "!(has(self.minimum) || has(self.maximum)) || self.type == 'integer'",
            "minimum and maximum apply only to integer variables",
        ),
    )

    key: str = Field(
        min_length=1,
        max_length=63,
        pattern=VARIABLE_KEY_PATTERN,
        description="Name of the variable, used as the key in Connection.spec.config or in "
        "the credentials Secret.",
    )
    label: str | None = Field(default=None, max_length=256, description="Human label.")
    description: str | None = Field(default=None, max_length=4096, description="Help text.")
    type: VariableType = Field(default="string", description="Value type.")
    required: bool = Field(default=False, description="A Connection must provide a value.")
    default: ScalarValue | None = Field(
        default=None,
        description="Value used when a Connection gives none (string, integer or boolean).",
    )
    secret: bool = Field(
        default=False,
        description="The value is a credential: it may come only from a Secret, never inline.",
    )
    locked: bool = Field(
        default=False,
        description="The default is fixed; a Connection may not override it.",
    )
    advanced: bool = Field(default=False, description="Display hint for user interfaces.")
    enum: list[ScalarValue] | None = Field(
        default=None, max_length=256, description="Allowed values (strings or integers)."
    )
    pattern: str | None = Field(
        default=None,
        max_length=MAX_PATTERN_LENGTH,
        description="Regular expression (RE2 syntax, matched in linear time: no "
        "backreferences or lookaround) a string value must match in full.",
    )
    minimum: int | None = Field(default=None, description="Smallest allowed integer value.")
    maximum: int | None = Field(default=None, description="Largest allowed integer value.")

    # `default` holds a string, integer or boolean, which a structural schema
    # can only keep as untyped content that CEL cannot see; these rules are
    # therefore enforced here and reported as ConnectorInvalid.
    @model_validator(mode="after")
    def _default_fits_flags(self) -> VariableSpec:
        if self.secret and self.default is not None:
            raise ValueError(
                f"variable {self.key}: a secret variable cannot have a default: "
                "secret values come only from Secrets"
            )
        if self.locked and self.default is None:
            raise ValueError(f"variable {self.key}: a locked variable needs a default")
        return self

    @model_validator(mode="after")
    def _pattern_compiles(self) -> VariableSpec:
        if self.pattern is not None:
            try:
                compile_pattern(self.pattern)
            except PatternError as exc:
                raise ValueError(f"variable {self.key}: pattern {exc}") from None
        return self


class HttpRequestSpec(ApiModel):
    """A request made by the http driver, relative to the Connection's base URL."""

    method: HttpMethod = Field(default="GET", description="HTTP method.")
    path: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^/",
        description="Path (and query) appended to the base URL; may contain {variable} "
        "placeholders.",
    )
    expect_status: list[int] = Field(
        default_factory=lambda: [200],
        min_length=1,
        max_length=16,
        description="Status codes that count as success.",
        json_schema_extra={"items": {"type": "integer", "minimum": 100, "maximum": 599}},
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra non-secret request headers.",
        json_schema_extra={"maxProperties": 32},
    )
    credentials_required: bool = Field(
        default=False,
        description="Prove that the server checks credentials: send the request without "
        "them first; when that gets an expected status too, the outcome is "
        "CredentialsNotRequired (Ready, with a warning) instead of Verified.",
    )


class CheckSpec(ApiModel):
    """A capability check beyond "can connect and log in"."""

    model_config = validation_rules(
        cel("self.type != 'query' || has(self.sql)", "a query check needs sql"),
        cel("self.type != 'table' || has(self.table)", "a table check needs table"),
        cel(
            "!(self.type in ['listFiles', 'readObject']) || has(self.path)",
            "listFiles and readObject checks need path",
        ),
        cel("self.type != 'http' || has(self.http)", "an http check needs http"),
    )

    type: CheckType = Field(description="Kind of check.")
    sql: str | None = Field(
        default=None,
        min_length=1,
        max_length=10000,
        description="Read-only SQL for a query check.",
    )
    table: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="SCHEMA.TABLE for a table check.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Path or prefix for listFiles, object path for readObject.",
    )
    http: HttpRequestSpec | None = Field(default=None, description="Request for an http check.")


class HttpErrorRule(ApiModel):
    """How the http driver classifies an error answer of this system, for the vendors that
    say in the body what the status does not (a quota reported as 403, say)."""

    status: list[int] = Field(
        min_length=1,
        max_length=16,
        description="Statuses this rule applies to.",
        json_schema_extra={"items": {"type": "integer", "minimum": 400, "maximum": 599}},
    )
    pointer: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^(/[^/]*)+$",
        description="A JSON Pointer (RFC 6901) into the answer's JSON body, e.g. "
        "/error/errors/0/reason; unset: every answer with one of the statuses.",
    )
    values: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=32,
        description="With pointer: the text found there must be one of these.",
    )
    reason: Literal[
        "AuthenticationFailed",
        "PermissionDenied",
        "ResourceNotFound",
        "RateLimited",
        "ProviderError",
    ] = Field(description="The reason such an answer gives.")


class ConnectorVerificationSpec(ApiModel):
    """Defaults for verifying Connections of this connector."""

    timeout: Timeout = Field(
        default="10s", description="Time limit for one verification, at most 2m."
    )
    interval: Interval = Field(
        default="1h", description="Default re-verification period, at least 1m."
    )
    checks: list[CheckSpec] = Field(
        default_factory=list,
        max_length=32,
        description="Checks run for every Connection by default.",
    )
    allow_connection_checks: bool = Field(
        default=False,
        description="Whether a Connection may add checks of its own (spec.verification.checks). "
        "They run with the connector's credentials, which the Connection's author may not be "
        "able to read, so this is off unless the connector is for a system whose author owns "
        "what the checks can reach (a generic database). A failed check of a Connection "
        "reports its reason and the server's error code, never the server's message.",
    )
    http: HttpRequestSpec | None = Field(
        default=None,
        description="The authenticated request that proves an http connection works.",
    )
    allow_connection_request: bool = Field(
        default=False,
        description="Whether a Connection may replace that request with one of its own "
        "(spec.verification.http: path, method, accepted statuses, where a bearer token or "
        "API key goes). Only for a connector whose Connections name their own base URL, "
        "like the generic http-api: a vendor entry proves what its vendor documents.",
    )
    http_errors: list[HttpErrorRule] = Field(
        default_factory=list,
        max_length=32,
        description="http driver: rules, first match wins, that classify an error answer "
        "of the verification request or an http check by its status and body, before the "
        "status alone decides.",
    )


# A bucket this large allows a burst no external system would welcome. The CRD
# refused only more than 1000000 before; such stored objects keep their budget.
MAX_RATE_LIMIT_REQUESTS = 10_000


# What one bucket of a connector's rateLimit is shared by.
RateLimitScope = Literal["Connector", "Connection", "Credential", "Host"]


class RateLimitSpec(ApiModel):
    """A budget for the calls patchbay makes to this system."""

    requests: Annotated[
        int,
        admission_check(
            lambda n: n <= MAX_RATE_LIMIT_REQUESTS,
            f"must be at most {MAX_RATE_LIMIT_REQUESTS}",
        ),
    ] = Field(
        ge=1,
        description="Calls allowed per period; also the largest burst.",
        json_schema_extra={"maximum": MAX_RATE_LIMIT_REQUESTS},
    )
    per: RateLimitPeriod = Field(description="Length of the period, at least 1s, e.g. 1m.")
    scope: RateLimitScope = Field(
        default="Connector",
        description="Who shares one budget: Connector, all its Connections together; "
        "Connection, each Connection its own; Credential, the Connections of a namespace "
        "that read the same Secret keys for their secret variables (Connections without "
        "any share one budget); Host, the Connections to one host and port (of the base "
        "URL for http, of the config's host or endpoint for the other drivers).",
    )


# A host name, or a pattern whose leading "*." stands for one or more labels.
HOST_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class EgressSpec(ApiModel):
    """Where the Connections of a connector may connect. A destination passes when its host
    name matches one of ``hosts`` or every address it resolves to lies in ``networks``;
    the operator-wide egress policy applies in addition."""

    hosts: list[Annotated[str, Field(max_length=253, pattern=HOST_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description="Host names, lower case; a leading '*.' matches one or more labels, "
        "e.g. '*.myshopify.com'. Checked for every connection: the configured host or base "
        "URL, OAuth token URLs and every redirect hop.",
    )
    networks: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=64,
        description="CIDRs, e.g. '10.20.0.0/16'.",
        json_schema_extra={
            "x-kubernetes-validations": [cel("self.all(n, isCIDR(n))", "must be CIDRs")]
        },
    )

    @field_validator("networks")
    @classmethod
    def _cidrs(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a CIDR") from None
        return networks


# The file APIs the CLI's `files` and `validate-selection` speak for http connectors.
FileApi = Literal["googleDrive", "msGraphDrive", "dropbox", "gmailAttachments"]


class FileDiscoverySpec(ApiModel):
    """Which vendor list API browses this system's files (http driver only)."""

    api: FileApi = Field(
        description="googleDrive (Drive API v3 files.list, shared drives too), msGraphDrive "
        "(Microsoft Graph: the default document library of the site in the variable site), "
        "dropbox (files/list_folder) or gmailAttachments (Gmail messages' attachments, by "
        "label or search); paths and limits in docs/discovery.md.",
    )


class DiscoverySpec(ApiModel):
    """What the CLI's discovery commands can browse through this connector's Connections."""

    files: FileDiscoverySpec | None = Field(
        default=None, description="File browsing through a vendor's list API."
    )


class ConnectorSpec(ApiModel):
    """A reusable template for one external system."""

    model_config = validation_rules(
        cel(
            "!has(self.verification) || !has(self.verification.http) || self.driver == 'http'",
            "verification.http is only allowed for the http driver",
        ),
        cel(
            "!has(self.auth) || !has(self.auth.oauth2) || !has(self.auth.oauth2.followRedirects)"
            " || !self.auth.oauth2.followRedirects"
            " || (has(self.egress) && has(self.egress.hosts) && size(self.egress.hosts) > 0)",
            "auth.oauth2.followRedirects needs egress.hosts, which bound where a redirect "
            "may send the client secret",
        ),
    )

    driver: DriverName = Field(description="Protocol driver that verifies Connections.")
    display_name: str | None = Field(default=None, max_length=256, description="Human name.")
    description: str | None = Field(default=None, max_length=4096, description="What it is.")
    deprecated: bool = Field(
        default=False, description="Connections using it get a ConnectorDeprecated warning."
    )
    auth: AuthSpec = Field(default_factory=AuthSpec, description="Authentication scheme.")
    variables: list[VariableSpec] = Field(
        default_factory=list,
        max_length=128,
        description="What a Connection provides.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
        },
    )
    verification: ConnectorVerificationSpec = Field(
        default_factory=ConnectorVerificationSpec,
        description="Verification defaults.",
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="Call budget for this system, shared as its scope says."
    )
    egress: EgressSpec | None = Field(
        default=None,
        description="Where its Connections may connect; unset: anywhere the operator's "
        "egress policy allows. A Connection going elsewhere gets EgressDenied before "
        "anything is sent.",
    )
    discovery: DiscoverySpec | None = Field(
        default=None,
        description="Discovery beyond what the driver offers: an http connector names the "
        "file API of its system here.",
    )

    @model_validator(mode="after")
    def _redirects_bounded(self) -> ConnectorSpec:
        oauth2 = self.auth.oauth2
        if (
            oauth2 is not None
            and oauth2.follow_redirects
            and not (self.egress and self.egress.hosts)
        ):
            raise ValueError(
                "auth.oauth2.followRedirects needs egress.hosts, which bound where a redirect "
                "may send the client secret"
            )
        return self

    time_zone: str = Field(
        default="UTC",
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of its Connections' cron schedules (the rules of a "
        "CronJob's timeZone), e.g. Europe/Berlin; a Connection may set its own.",
    )
    date_format: str = Field(
        default="%Y-%m-%d",
        max_length=64,
        description="strftime format the system's dates use; its Connections' binding Secrets "
        "carry it as dateFormat for workloads.",
    )


class ConnectorStatus(ApiModel):
    """Observed state of a Connector."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready tells whether the template is usable.",
        json_schema_extra=CONDITIONS_SCHEMA_EXTRA,
    )
    connections: int | None = Field(
        default=None, ge=0, description="Number of Connections that use this connector."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The generation this status describes."
    )


class ObjectMeta(ApiModel):
    """The subset of metadata patchbay reads."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _ConnectorObject(ApiModel):
    model_config = ConfigDict(extra="ignore")

    api_version: str | None = None
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ConnectorSpec
    status: ConnectorStatus | None = None


class Connector(_ConnectorObject):
    """A template for one external system, visible in its own namespace."""

    kind: Literal["Connector"] = "Connector"


class ClusterConnector(_ConnectorObject):
    """A template for one external system, visible in every namespace."""

    kind: Literal["ClusterConnector"] = "ClusterConnector"


def connector_from_body(body: dict[str, Any]) -> Connector | ClusterConnector:
    """Parse a Connector or ClusterConnector as the API server returns it."""
    if body.get("kind") == "ClusterConnector":
        return ClusterConnector.model_validate(body)
    return Connector.model_validate(body)
