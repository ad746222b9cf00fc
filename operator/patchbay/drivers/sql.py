"""What the SQL drivers share: the shape of a capping query, reading rows within the read
caps, catalog rows as tables and columns, column names normalized, and the query and
table checks.

A driver whose database allows it never runs a user's statement as given: it runs a
SELECT over it (as a subquery or common table expression) that returns, for each of the
statement's values, the value when its text takes at most the cap, else NULL, and the
value cut to the cap, else NULL (``capped_columns``). So no value longer than the cap
crosses the network, and ``CappedRows`` puts each row back together, within the result's
caps, as it is read.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import AnyStr, NamedTuple

from patchbay.api.connector import CheckSpec, CheckType
from patchbay.drivers.base import (
    ColumnInfo,
    JsonValue,
    RowCollector,
    RowSet,
    TableInfo,
    capped_value,
    value_cap,
)
from patchbay.drivers.checks import CheckFunction, check_subject, ok_message

ONE_STATEMENT = "only one statement may run here, not several separated by semicolons"
EVERY_ROW = 2**62  # catalog listings are never cut short


class CappedColumns(NamedTuple):
    """The names a capping query gives the statement's columns, and its select lists."""

    names: list[str]
    # Each value when its text takes at most the cap, else NULL.
    kept: list[str]
    # Each value whose text takes more than the cap, cut to the cap in characters, else NULL.
    cut: list[str]


def capped_columns(
    columns: int, cap: int, *, qualifier: str = "", as_text: str = ""
) -> CappedColumns:
    """The select lists of a query over a statement of ``columns`` columns named c0, c1, ...

    ``qualifier`` prefixes each name (e.g. "q."), and ``as_text`` follows a name where the
    value must be text to be measured and cut (e.g. "::text"). A cut value is at most four
    bytes per character of the cap.
    """
    names = [f"c{i}" for i in range(columns)]
    values = [f"{qualifier}{n}" for n in names]
    texts = [f"{value}{as_text}" for value in values]
    return CappedColumns(
        names,
        [
            f"CASE WHEN OCTET_LENGTH({text}) <= {cap} THEN {value} END"
            for value, text in zip(values, texts, strict=True)
        ],
        [f"CASE WHEN OCTET_LENGTH({text}) > {cap} THEN LEFT({text}, {cap}) END" for text in texts],
    )


def without_trailing_semicolons(statement: AnyStr) -> AnyStr:
    """``statement`` without the semicolons that end it: fine on their own, but not inside
    a subquery or common table expression."""
    semicolon = ";" if isinstance(statement, str) else b";"
    body = statement.rstrip()
    while body.endswith(semicolon):
        body = body[:-1].rstrip()
    return body


class CappedRows:
    """The rows of a statement with ``columns`` of ``types``, offered one at a time as they are
    read, until ``max_rows`` rows or MAX_RESULT_BYTES are kept (``RowCollector``).

    What is bounded: each value (cut to ``cap``; on the server by a capping query, where the
    driver has one), each row (the per-value cap shrinks with the number of columns) and the
    rows kept. The client library receives a row whole, so one row is what the client holds
    beyond the rows kept.
    """

    def __init__(self, columns: Sequence[str], types: Sequence[str], max_rows: int) -> None:
        self.columns = tuple(columns)
        self.types = tuple(types)
        self.cap = value_cap(len(self.columns))
        self._collector = RowCollector(max_rows)

    def offer(self, kept: Sequence[object], cut: Sequence[object] | None = None) -> bool:
        """Keep the row of the values ``kept`` on the server, or, where NULL there, ``cut``
        (a capping query's two halves; without one, ``kept`` is the row as read, cut here).
        False tells the caller to stop reading."""
        row: list[JsonValue] = []
        any_cut = False
        for value, cut_value in zip(kept, cut or [None] * len(kept), strict=True):
            json, value_cut = capped_value(value if cut_value is None else cut_value, self.cap)
            row.append(json)
            any_cut = any_cut or value_cut or cut_value is not None
        return self._collector.offer(row, any_cut)

    def result(self) -> tuple[RowSet, int | None]:
        """The rows kept, and the per-value cap when a value was cut (else None)."""
        cut_to = self.cap if self._collector.values_cut else None
        return self._collector.result(self.columns, self.types), cut_to


def table_infos(rows: Iterable[Sequence[JsonValue]], kinds: Mapping[str, str]) -> list[TableInfo]:
    """Tables from catalog rows of schema, name and the catalog's kind (named by ``kinds``)."""
    return [
        TableInfo(str(schema), str(name), kinds.get(str(kind), str(kind).lower()))
        for schema, name, kind in rows
    ]


def column_infos(rows: Iterable[Sequence[JsonValue]]) -> list[ColumnInfo]:
    """Columns from catalog rows of name, type, whether nullable and whether in the primary
    key."""
    return [
        ColumnInfo(str(name), str(type_), bool(nullable), bool(primary_key))
        for name, type_, nullable, primary_key in rows
    ]


# Letters and digits of any script: \w without the underscore.
_ALPHANUMERIC_RUN = re.compile(r"[^\W_]+")


def normalized_name(name: str) -> str:
    """A column name in lower snake case: "OrderID" -> "order_id", "Order Date" ->
    "order_date", "HTTPStatus" -> "http_status".

    Words are the runs of letters and digits; a word also ends before a capital letter that
    follows a small letter or a digit ("orderId", "Line2Total"), and before the last capital
    of a run of capitals followed by a small letter ("HTTPStatus"). Words are lowered and
    joined with "_"; everything else (spaces, punctuation, "_") only separates words. A name
    without letters or digits normalizes to "". docs/discovery.md states the same rule.
    """
    words: list[str] = []
    for run in _ALPHANUMERIC_RUN.findall(name):
        start = 0
        for i in range(1, len(run)):
            before, char = run[i - 1], run[i]
            after = run[i + 1] if i + 1 < len(run) else ""
            if char.isupper() and (
                before.islower() or before.isdigit() or (before.isupper() and after.islower())
            ):
                words.append(run[start:i])
                start = i
        words.append(run[start:])
    return "_".join(word.lower() for word in words)


class SqlChecks(ABC):
    """The query and table checks over one session of a SQL driver, which says how to read
    a query's first row and how to look at a table."""

    @abstractmethod
    async def read_query(self, statement: str) -> int | None:
        """Read the first row of ``statement`` within the read caps, in a read-only
        transaction of its own; the per-value cap when a value was cut (else None)."""

    @abstractmethod
    async def read_table(self, name: str) -> None:
        """Check that table ``name`` ("schema.table" or "table") exists and may be read,
        reading none of its rows."""

    async def query(self, check: CheckSpec) -> str:
        return ok_message(await self.read_query(check_subject(check)))

    async def table(self, check: CheckSpec) -> str:
        await self.read_table(check_subject(check))
        return ok_message()

    def functions(self) -> dict[CheckType, CheckFunction]:
        return {"query": self.query, "table": self.table}
