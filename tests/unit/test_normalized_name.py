"""Column names in lower snake case (normalizedName), one rule for every SQL driver."""

from __future__ import annotations

import pytest

from patchbay.drivers.sql import normalized_name


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("OrderID", "order_id"),
        ("Order Date", "order_date"),
        ("HTTPStatus", "http_status"),
        ("order_id", "order_id"),
        ("customerId", "customer_id"),
        ("Line2Total", "line2_total"),
        ("2024Sales", "2024_sales"),
        ("address2", "address2"),
        ("  Total $ (USD) ", "total_usd"),
        ("__created__at", "created_at"),
        ("ÄpfelBirnen", "äpfel_birnen"),
        ("Größe", "größe"),
        ("IDs", "i_ds"),  # a run of capitals before a small letter ends before its last
        ("?column?", "column"),
        ("", ""),
        ("%", ""),
    ],
)
def test_names_become_lower_snake_case(name: str, normalized: str) -> None:
    assert normalized_name(name) == normalized


def test_a_normalized_name_normalizes_to_itself() -> None:
    for name in ("OrderID", "Order Date", "HTTPStatus", "Line2Total", "ÄpfelBirnen"):
        once = normalized_name(name)
        assert normalized_name(once) == once
