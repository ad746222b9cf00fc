"""How the CLI prints results: aligned tables, and JSON/YAML with stable field names."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import yaml

from patchbay.cli import discovery, output
from patchbay.cli.main import Progress
from patchbay.cli.manage import describe_body
from patchbay.drivers.base import RowSet


def test_table_columns_line_up_under_their_headers() -> None:
    text = output.format_table(
        ["SCHEMA", "NAME", "KIND"],
        [("sales", "orders", "table"), ("public", "a_much_longer_name", "view")],
    )
    header, first, second = text.splitlines()
    assert header.index("KIND") == first.index("table") == second.index("view")
    assert header.index("NAME") == first.index("orders") == second.index("a_much")
    assert header == "SCHEMA   NAME                 KIND"


def test_table_lines_carry_no_trailing_spaces() -> None:
    text = output.format_table(["A", "B"], [("x", None)])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_cells_are_one_line_and_booleans_read_true_false() -> None:
    assert output.cell("two\nlines\tand tab") == "two\\nlines\\tand tab"
    assert output.cell(True) == "true"
    assert output.cell(None) == ""
    assert output.cell({"a": [1, 2]}) == '{"a":[1,2]}'


def test_long_cells_are_cut_with_an_ellipsis_in_tables_only() -> None:
    long = "x" * 200
    assert output.cell(long) == "x" * (output.MAX_CELL_WIDTH - 1) + "…"
    assert output.cell(long, None) == long
    assert long in output.format_fields([("Message", long)])


def test_fields_align_their_values() -> None:
    text = output.format_fields([("Name", "orders"), ("Has credentials", True)], indent="  ")
    first, second = text.splitlines()
    assert first.index("orders") == second.index("true")
    assert first.startswith("  Name:")


DATA: dict[str, Any] = discovery.rows_data(
    RowSet(("ID", "Note Text"), ("integer", "text"), ((1, None), (2, "é")), truncated=True)
)


def test_rows_data_names_each_column_three_ways_and_counts_the_rows() -> None:
    assert DATA == {
        "columns": [
            {"name": "ID", "normalizedName": "id", "dataType": "integer"},
            {"name": "Note Text", "normalizedName": "note_text", "dataType": "text"},
        ],
        "rows": [[1, None], [2, "é"]],
        "rowCount": 2,
        "truncated": True,
    }


@pytest.mark.parametrize("load", [json.loads, yaml.safe_load], ids=["json", "yaml"])
def test_machine_output_is_the_data_itself(load: Any) -> None:
    fmt: output.OutputFormat = "json" if load is json.loads else "yaml"
    assert load(output.render(DATA, fmt, output.rows_view)) == DATA


def test_yaml_keeps_the_field_order_of_the_data() -> None:
    text = output.machine({"name": "a", "columns": [], "truncated": False}, "yaml")
    assert [line.split(":")[0] for line in text.splitlines()] == ["name", "columns", "truncated"]


def test_rows_view_shows_types_null_and_says_when_the_result_was_truncated() -> None:
    text = output.render(DATA, "table", output.rows_view)
    lines = text.splitlines()
    # Names keep their case; each has its type.
    assert re.split(r" {3,}", lines[0]) == ["ID (integer)", "Note Text (text)"]
    assert lines[1].split() == ["1", "NULL"]
    assert lines[-1] == "(2 rows; truncated: more rows or longer values than shown)"
    one = discovery.rows_data(RowSet(("x",), ("int",), ((1,),), truncated=False))
    assert output.rows_view(one).splitlines()[-1] == "(1 row)"


def test_columns_view_shows_normalized_names_types_nullability_and_primary_keys() -> None:
    data = {
        "columns": [
            {
                "name": "OrderID",
                "normalizedName": "order_id",
                "dataType": "int",
                "nullable": False,
                "primaryKey": True,
            }
        ]
    }
    header, row = output.columns_view(data).splitlines()
    assert re.split(r" {3,}", header) == [
        "NAME",
        "NORMALIZED NAME",
        "TYPE",
        "NULLABLE",
        "PRIMARY KEY",
    ]
    assert row.split() == ["OrderID", "order_id", "int", "false", "true"]


CONNECTION: dict[str, Any] = {
    "metadata": {
        "name": "orders",
        "namespace": "shop",
        "labels": {"patchbay.dev/driver": "postgres"},
    },
    "spec": {"connectorRef": {"name": "postgres"}, "default": True},
    "status": {
        "phase": "Failed",
        "isDefault": True,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "AuthenticationFailed",
                "message": "password authentication failed",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        ],
        "verification": {
            "result": "Failed",
            "error": {"code": "AuthenticationFailed", "message": "bad", "retryable": False},
            "durationMs": 12,
            "checks": [
                {"type": "table", "target": "sales.orders", "result": "Unknown", "code": "Pending"}
            ],
        },
        "secretFields": {"password": {"configured": True}},
        "binding": {"name": "orders-binding"},
    },
}


def test_describe_data_has_stable_field_names_and_only_whether_secrets_are_set() -> None:
    data = describe_body(CONNECTION)
    assert list(data) == [
        "name",
        "namespace",
        "displayName",
        "description",
        "connector",
        "driver",
        "phase",
        "suspend",
        "default",
        "isDefault",
        "conditions",
        "verification",
        "config",
        "hasCredentials",
        "secretFields",
        "binding",
        "credentialsWithheld",
    ]
    assert data["connector"] == {"kind": "ClusterConnector", "name": "postgres"}
    assert data["secretFields"] == {"password": {"configured": True}}


def test_describe_shows_nothing_of_a_status_the_model_does_not_define() -> None:
    # The API server prunes unknown fields; a status it did not vet is not shown at all.
    odd = {
        **CONNECTION,
        "status": {
            **CONNECTION["status"],
            "secretFields": {"password": {"configured": True, "unexpected": "value"}},
        },
    }
    data = describe_body(odd)
    assert "value" not in json.dumps(data)
    assert data["secretFields"] == {}
    assert data["phase"] is None


def test_describe_view_shows_phase_error_conditions_checks_and_secret_fields() -> None:
    text = output.describe_view(describe_body(CONNECTION))
    lines = [line.split() for line in text.splitlines()]
    assert ["Phase:", "Failed"] in lines
    assert ["Connector:", "ClusterConnector/postgres"] in lines
    assert ["Error:", "AuthenticationFailed:", "bad", "(not", "retried)"] in lines
    assert ["Duration:", "12ms"] in lines
    assert ["password", "true"] in lines
    assert "password authentication failed" in text  # condition messages are not cut
    assert ["table", "sales.orders", "Unknown", "Pending"] in lines


def test_describe_view_of_a_connection_never_verified() -> None:
    bare = {"metadata": {"name": "new", "namespace": "shop"}, "spec": {}}
    text = output.describe_view(describe_body(bare))
    assert "Conditions: (none)" in text
    assert "Secret fields: (none)" in text


def test_files_view_points_at_the_next_page() -> None:
    data = {
        "path": "/in",
        "entries": [
            {"name": "a.csv", "kind": "file", "size": 10, "modifiedAt": None, "path": "/in/a.csv"}
        ],
        "nextPageToken": "abc",
    }
    text = output.files_view(data)
    assert text.splitlines()[0].split() == ["NAME", "KIND", "SIZE", "MODIFIED"]
    assert text.splitlines()[1].split() == ["a.csv", "file", "10"]
    assert text.splitlines()[-1] == "more entries: --page-token abc"


def test_files_view_shows_ids_where_the_system_has_them() -> None:
    entry = {"name": "q1.csv", "kind": "file", "size": 7, "modifiedAt": None, "path": "/q1.csv"}
    data = {"path": "/", "entries": [{**entry, "id": "id:a4ayc"}], "nextPageToken": None}
    lines = output.files_view(data).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SIZE", "MODIFIED", "ID"]
    assert lines[1].split() == ["q1.csv", "file", "7", "id:a4ayc"]


def test_selection_view_lists_violations() -> None:
    data = {
        "totalItems": 3,
        "totalBytes": 30,
        "maxDepth": 2,
        "valid": False,
        "complete": False,
        "violations": [{"code": "TooManyItems", "path": "/in/c", "message": "more than 2 items"}],
    }
    lines = [line.split() for line in output.selection_view(data).splitlines()]
    assert ["Items:", "3"] in lines
    assert ["Valid:", "false"] in lines
    assert ["Complete:", "false"] in lines
    assert ["TooManyItems", "/in/c", "more", "than", "2", "items"] in lines


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_spins_and_clears_its_line() -> None:
    stream = Terminal()
    with Progress("waiting for connection/a", stream) as progress:
        progress.tick(1.2)
        progress.tick(2.0)
    text = stream.getvalue()
    assert "\r/ waiting for connection/a (1s)" in text
    assert "\r- waiting for connection/a (2s)" in text
    assert text.endswith("\r\033[K")


def test_progress_elsewhere_is_one_plain_line() -> None:
    stream = io.StringIO()
    with Progress("waiting for connection/a", stream) as progress:
        progress.tick(1.0)
        progress.tick(2.0)
    assert stream.getvalue() == "waiting for connection/a ...\n"
