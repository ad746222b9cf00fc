"""Which Secrets a Connection reads, and the credential values found in them.

Pure functions over already-fetched Secret data. Values never leave the
returned objects except towards a driver or the binding Secret; errors name
Secrets and keys, never values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import VariableSpec
from patchbay.api.reasons import Reason
from patchbay.core.config import ConfigInvalidError
from patchbay.drivers.base import TlsMaterial

SecretData = Mapping[str, str]


class CredentialsError(Exception):
    """SecretNotFound or SecretKeyMissing, with a message naming the Secret and key."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CredentialSource:
    variable: str
    secret: str
    key: str


@dataclass(frozen=True)
class ResolvedCredentials:
    values: dict[str, str] = field(repr=False)
    configured: dict[str, bool]
    tls: TlsMaterial | None = field(default=None, repr=False)


def credential_sources(
    spec: ConnectionSpec, secret_variables: Sequence[VariableSpec]
) -> list[CredentialSource]:
    """Per-variable items win over secretRef, whose keys are named after the variables."""
    secret_keys = {v.key for v in secret_variables}
    items = spec.credentials.items if spec.credentials else []
    by_item = {}
    for item in items:
        if item.key not in secret_keys:
            raise ConfigInvalidError(
                item.key, "is named in spec.credentials.items but is not a secret variable"
            )
        by_item[item.key] = CredentialSource(
            item.key, item.secret_key_ref.name, item.secret_key_ref.key
        )
    secret_ref = spec.credentials.secret_ref if spec.credentials else None
    sources = []
    for variable in secret_variables:
        if variable.key in by_item:
            sources.append(by_item[variable.key])
        elif secret_ref is not None:
            sources.append(CredentialSource(variable.key, secret_ref.name, variable.key))
    return sources


def referenced_secrets(spec: ConnectionSpec, sources: Sequence[CredentialSource]) -> list[str]:
    """Names of every Secret the Connection reads, sorted."""
    names = {s.secret for s in sources}
    if spec.tls is not None:
        if spec.tls.ca_secret_ref is not None:
            names.add(spec.tls.ca_secret_ref.name)
        if spec.tls.client_cert_secret_ref is not None:
            names.add(spec.tls.client_cert_secret_ref.name)
    return sorted(names)


def _lookup(secrets: Mapping[str, SecretData | None], name: str) -> SecretData:
    data = secrets.get(name)
    if data is None:
        raise CredentialsError(Reason.SECRET_NOT_FOUND, f"Secret {name!r} not found")
    return data


def resolve_credentials(
    spec: ConnectionSpec,
    secret_variables: Sequence[VariableSpec],
    secrets: Mapping[str, SecretData | None],
) -> ResolvedCredentials:
    """Values of the secret variables and TLS material; raises CredentialsError."""
    sources = {s.variable: s for s in credential_sources(spec, secret_variables)}
    values: dict[str, str] = {}
    configured: dict[str, bool] = {}
    for variable in secret_variables:
        source = sources.get(variable.key)
        if source is None:
            if variable.required:
                raise CredentialsError(
                    Reason.SECRET_KEY_MISSING,
                    f"no Secret provides the required secret variable {variable.key!r}; "
                    "set spec.credentials.secretRef or spec.credentials.items",
                )
            configured[variable.key] = False
            continue
        data = _lookup(secrets, source.secret)
        if source.key in data:
            values[variable.key] = data[source.key]
            configured[variable.key] = True
        elif variable.required:
            raise CredentialsError(
                Reason.SECRET_KEY_MISSING,
                f"Secret {source.secret!r} has no key {source.key!r} "
                f"for the secret variable {variable.key!r}",
            )
        else:
            configured[variable.key] = False
    return ResolvedCredentials(values, configured, _resolve_tls(spec, secrets))


def _resolve_tls(
    spec: ConnectionSpec, secrets: Mapping[str, SecretData | None]
) -> TlsMaterial | None:
    if spec.tls is None:
        return None
    ca = cert = key = None
    if spec.tls.ca_secret_ref is not None:
        ref = spec.tls.ca_secret_ref
        data = _lookup(secrets, ref.name)
        if ref.key not in data:
            raise CredentialsError(
                Reason.SECRET_KEY_MISSING, f"Secret {ref.name!r} has no key {ref.key!r}"
            )
        ca = data[ref.key]
    if spec.tls.client_cert_secret_ref is not None:
        name = spec.tls.client_cert_secret_ref.name
        data = _lookup(secrets, name)
        for required in ("tls.crt", "tls.key"):
            if required not in data:
                raise CredentialsError(
                    Reason.SECRET_KEY_MISSING, f"Secret {name!r} has no key {required!r}"
                )
        cert, key = data["tls.crt"], data["tls.key"]
    return TlsMaterial(ca, cert, key, spec.tls.server_name)
