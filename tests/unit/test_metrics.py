"""The per-Connection series: one of each per Connection, moved when its labels change."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from patchbay.api.reasons import Reason
from patchbay.metrics import Metrics


def series(metrics: Metrics, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The exposed samples of one metric, by label set."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if sample.name == name
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_connection_info_names_connector_driver_phase_and_reason() -> None:
    metrics = Metrics()
    metrics.observe_phase("team", "orders", "api", "Failed", driver="http", reason="Timeout")

    assert series(metrics, "patchbay_connection_info") == {
        labels(
            namespace="team",
            name="orders",
            connector="api",
            driver="http",
            phase="Failed",
            reason="Timeout",
        ): 1.0
    }
    assert series(metrics, "patchbay_connection_ready") == {
        labels(namespace="team", name="orders", connector="api"): 0.0
    }


def test_a_new_phase_or_reason_replaces_the_connections_info_series() -> None:
    metrics = Metrics()
    metrics.observe_phase("team", "orders", "api", "Pending", driver="http", reason="Pending")
    metrics.observe_phase("team", "orders", "api", "Failed", driver="http", reason="Timeout")
    metrics.observe_phase("team", "orders", "api", "Ready", driver="http", reason="Verified")

    info = series(metrics, "patchbay_connection_info")
    assert list(info) == [
        labels(
            namespace="team",
            name="orders",
            connector="api",
            driver="http",
            phase="Ready",
            reason="Verified",
        )
    ]
    assert series(metrics, "patchbay_connection_ready") == {
        labels(namespace="team", name="orders", connector="api"): 1.0
    }


def test_a_new_connector_moves_both_series() -> None:
    metrics = Metrics()
    metrics.observe_phase("team", "orders", "api", "Ready", driver="http", reason="Verified")
    metrics.observe_phase("team", "orders", "db", "Ready", driver="postgres", reason="Verified")

    assert {dict(s)["connector"] for s in series(metrics, "patchbay_connection_info")} == {"db"}
    assert {dict(s)["connector"] for s in series(metrics, "patchbay_connection_ready")} == {"db"}


def test_a_reason_given_as_its_enum_is_served_as_its_code() -> None:
    metrics = Metrics()
    metrics.observe_phase(
        "team", "orders", "api", "Suspended", driver="http", reason=Reason.SUSPENDED
    )

    assert {dict(s)["reason"] for s in series(metrics, "patchbay_connection_info")} == {"Suspended"}


def test_a_deleted_connection_leaves_no_series_and_others_stay() -> None:
    metrics = Metrics()
    metrics.observe_phase("team", "orders", "api", "Ready", driver="http", reason="Verified")
    metrics.observe_phase("team", "billing", "api", "Suspended", driver="http", reason="Suspended")
    metrics.forget_connection("team", "orders")

    for name in ("patchbay_connection_info", "patchbay_connection_ready"):
        assert {dict(s)["name"] for s in series(metrics, name)} == {"billing"}
