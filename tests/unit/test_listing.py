"""`patchbay list`: what the API server is asked to filter, and the search, order and
pages made of what it returns."""

from __future__ import annotations

from typing import Any

import pytest

from patchbay.cli.caller import CommandError
from patchbay.cli.listing import ListQuery, decode_token, encode_token, sorted_items


def item(name: str, namespace: str = "shop", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "status": status}


def test_filters_become_label_and_field_selectors() -> None:
    query = ListQuery("shop", connector="postgres", driver="postgres", phase="Failed")

    assert query.selectors() == {
        "labelSelector": "patchbay.dev/driver=postgres",
        "fieldSelector": "spec.connectorRef.name=postgres,status.phase=Failed",
    }
    assert ListQuery("shop", search="orders").selectors() == {}


def test_sorting_by_a_field_keeps_ties_and_missing_values_in_a_stable_order() -> None:
    items = [
        item("b", phase="Ready"),
        item("a", phase="Ready"),
        item("c"),
        item("a", namespace="billing", phase="Failed"),
    ]

    by_phase = [
        (i["metadata"]["namespace"], i["metadata"]["name"]) for i in sorted_items(items, "phase")
    ]
    descending = [i["metadata"]["name"] for i in sorted_items(items, "-name")]

    assert by_phase == [("shop", "c"), ("billing", "a"), ("shop", "a"), ("shop", "b")]
    assert descending == ["c", "b", "a", "a"]


def test_a_continue_token_works_only_for_the_query_it_was_printed_for() -> None:
    query = ListQuery("shop", phase="Ready", sort="-created")
    token = encode_token(20, query)

    assert decode_token(token, query) == 20
    with pytest.raises(CommandError, match="other filters or order"):
        decode_token(token, ListQuery("shop", phase="Failed", sort="-created"))
    with pytest.raises(CommandError, match="not a token"):
        decode_token("garbage!", query)
