"""Which Secrets a Connection references, what its admission record covers, and
when a Secret opts in: the pure rules behind SecretNotAuthorized."""

from __future__ import annotations

from typing import Any

from patchbay.core.authorization import (
    SecretUse,
    admission_record,
    opted_in,
    record_holds,
    scope,
    secret_uses,
)

KEY = b"k" * 32


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "connectorRef": {"kind": "ClusterConnector", "name": "http-api"},
        "config": {"baseUrl": "https://api.example.test"},
        "credentials": {"secretRef": {"name": "api-token"}},
        **extra,
    }


def test_every_referenced_secret_is_listed_once_with_the_field_naming_it() -> None:
    uses = secret_uses(
        spec(
            credentials={
                "secretRef": {"name": "shared"},
                "items": [
                    {"key": "password", "secretKeyRef": {"name": "vault", "key": "pw"}},
                    {"key": "token", "secretKeyRef": {"name": "shared", "key": "t"}},
                ],
            },
            tls={"caSecretRef": {"name": "ca"}, "clientCertSecretRef": {"name": "client"}},
        )
    )
    assert uses == [
        SecretUse("shared", "spec.credentials.secretRef"),
        SecretUse("vault", "spec.credentials.items[0].secretKeyRef"),
        SecretUse("ca", "spec.tls.caSecretRef"),
        SecretUse("client", "spec.tls.clientCertSecretRef"),
    ]


def test_malformed_references_are_skipped_not_fatal() -> None:
    # the mutating webhook sees objects before the schema validated them
    assert secret_uses({"credentials": {"items": ["x", {"secretKeyRef": 3}]}, "tls": 7}) == []


def test_a_record_holds_for_the_scope_it_was_made_for_only() -> None:
    covered = scope("team-a", "billing", spec())
    record = admission_record(KEY, covered)
    assert record_holds(KEY, covered, record)
    assert not record_holds(b"x" * 32, covered, record)
    assert not record_holds(None, covered, record)
    assert not record_holds(KEY, covered, None)
    assert not record_holds(KEY, covered, record[:-1] + "0")


def test_a_record_breaks_when_anything_deciding_the_secrets_use_changes() -> None:
    record = admission_record(KEY, scope("team-a", "billing", spec()))
    changed = [
        scope("team-b", "billing", spec()),
        scope("team-a", "other", spec()),
        scope("team-a", "billing", spec(config={"baseUrl": "https://attacker.test"})),
        scope("team-a", "billing", spec(credentials={"secretRef": {"name": "payments-db"}})),
        scope("team-a", "billing", spec(tls={"caSecretRef": {"name": "ca"}})),
        scope(
            "team-a",
            "billing",
            spec(verification={"checks": [{"type": "query", "sql": "select secret from t"}]}),
        ),
    ]
    assert not any(record_holds(KEY, covered, record) for covered in changed)


def test_a_record_survives_edits_that_do_not_change_where_secrets_go() -> None:
    record = admission_record(KEY, scope("team-a", "billing", spec()))
    edited = spec(suspend=True, default=True, verification={"interval": "5m", "mode": "Manual"})
    assert record_holds(KEY, scope("team-a", "billing", edited), record)


def test_a_secret_opts_in_by_naming_the_connection_or_everyone() -> None:
    annotation = "patchbay.dev/allowed-connections"
    assert opted_in({annotation: "billing"}, "billing")
    assert opted_in({annotation: "orders, billing"}, "billing")
    assert opted_in({annotation: "*"}, "billing")
    assert not opted_in({annotation: "billing-2"}, "billing")
    assert not opted_in({annotation: ""}, "billing")
    assert not opted_in({}, "billing")
    assert not opted_in(None, "billing")
