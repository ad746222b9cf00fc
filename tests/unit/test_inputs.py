"""A Connection is re-verified exactly when what its verification depends on changes."""

from __future__ import annotations

from typing import Any

from patchbay.core.inputs import inputs_hash

SPEC: dict[str, Any] = {
    "connectorRef": {"kind": "ClusterConnector", "name": "postgres"},
    "config": {"host": "db.example.com", "port": 5432},
    "credentials": {"secretRef": {"name": "db-creds"}},
    "verification": {"mode": "Periodic"},
    "suspend": False,
    "default": False,
}
SECRETS: dict[str, str | None] = {"db-creds": "1001", "ca": "77"}


def _hash(
    spec: dict[str, Any] | None = None,
    generation: int | None = 3,
    secrets: dict[str, str | None] | None = None,
    uid: str | None = "connector-uid",
) -> str:
    return inputs_hash(spec or SPEC, uid, generation, SECRETS if secrets is None else secrets)


def test_same_inputs_give_the_same_hash() -> None:
    assert _hash() == _hash()
    assert _hash(secrets={"ca": "77", "db-creds": "1001"}) == _hash()


def test_hash_changes_with_the_config() -> None:
    changed = {**SPEC, "config": {"host": "db.example.com", "port": 6432}}

    assert _hash(changed) != _hash()


def test_hash_changes_with_the_connector_generation() -> None:
    assert _hash(generation=4) != _hash(generation=3)


def test_hash_changes_when_the_connector_is_replaced() -> None:
    assert _hash(uid="other-uid") != _hash()


def test_hash_changes_with_a_secret_resource_version() -> None:
    assert _hash(secrets={"db-creds": "1002", "ca": "77"}) != _hash()


def test_hash_changes_when_a_secret_appears() -> None:
    assert _hash(secrets={"db-creds": "1001", "ca": None}) != _hash(
        secrets={"db-creds": "1001", "ca": "78"}
    )


def test_hash_unchanged_when_only_suspend_or_default_toggle() -> None:
    toggled = {**SPEC, "suspend": True, "default": True}
    without = {k: v for k, v in SPEC.items() if k not in ("suspend", "default")}

    assert _hash(toggled) == _hash()
    assert _hash(without) == _hash()


def test_hash_is_short_and_hexadecimal() -> None:
    value = _hash()

    assert len(value) == 16
    int(value, 16)
