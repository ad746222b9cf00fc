"""Condition reasons, which double as verification error codes.

These names are part of the API: they are stable, CamelCase and documented in
docs/reasons.md. A driver maps every failure of its library onto one of them.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    VALID = "Valid"  # a Connector whose definition is usable
    VERIFIED = "Verified"
    # Verified, but the server answered as well without credentials: it does not check them.
    CREDENTIALS_NOT_REQUIRED = "CredentialsNotRequired"
    PENDING = "Pending"
    SUSPENDED = "Suspended"
    STALE = "Stale"
    CONNECTOR_NOT_FOUND = "ConnectorNotFound"
    CONNECTOR_INVALID = "ConnectorInvalid"
    CONNECTOR_DEPRECATED = "ConnectorDeprecated"
    CONFIG_INVALID = "ConfigInvalid"
    SECRET_NOT_FOUND = "SecretNotFound"
    SECRET_KEY_MISSING = "SecretKeyMissing"
    SECRET_NOT_AUTHORIZED = "SecretNotAuthorized"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    RESOURCE_NOT_FOUND = "ResourceNotFound"
    HOST_UNREACHABLE = "HostUnreachable"
    TIMEOUT = "Timeout"
    TLS_ERROR = "TLSError"
    RATE_LIMITED = "RateLimited"
    EGRESS_DENIED = "EgressDenied"
    PROTOCOL_ERROR = "ProtocolError"
    DEFAULT_CONFLICT = "DefaultConflict"
    BINDING_CONFLICT = "BindingConflict"
    PROVIDER_ERROR = "ProviderError"


# Failures that cannot heal without a change of inputs: retrying them only
# hammers the external system (and may lock the account).
NOT_RETRYABLE = frozenset(
    {
        Reason.AUTHENTICATION_FAILED,
        Reason.PERMISSION_DENIED,
        Reason.CONFIG_INVALID,
        Reason.CONNECTOR_INVALID,
        Reason.EGRESS_DENIED,
    }
)
