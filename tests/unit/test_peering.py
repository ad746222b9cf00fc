"""A replica works only while no live peer of higher priority exists, as kopf decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from patchbay.controller.peering import outranked, peering_paths

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 15) -> dict[str, object]:
    seen = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


def test_a_live_peer_of_higher_priority_outranks_this_replica() -> None:
    assert outranked([peer(-100, 5), peer(-200, 1)], priority=-200, now=NOW)


def test_this_replica_and_lower_peers_do_not_outrank_it() -> None:
    assert not outranked([peer(-100, 1), peer(-300, 1)], priority=-100, now=NOW)


def test_a_dead_peer_of_higher_priority_no_longer_counts() -> None:
    assert not outranked([peer(-100, 20, lifetime=15)], priority=-200, now=NOW)


def test_cluster_wide_and_per_namespace_peering_objects() -> None:
    assert peering_paths("patchbay", None) == ["/apis/kopf.dev/v1/clusterkopfpeerings/patchbay"]
    assert peering_paths("patchbay", ["a"]) == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings/patchbay"
    ]
