"""Pure pieces of discovery: selection walking, table names, values, verify requests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from patchbay.api.reasons import Reason
from patchbay.cli.caller import CommandError
from patchbay.cli.discovery import (
    BudgetedFiles,
    CommandBudget,
    budgeted,
    check_sql,
    split_table_name,
)
from patchbay.cli.manage import answers, request_timestamp
from patchbay.drivers.base import (
    MAX_WALK_DEPTH,
    DriverError,
    FileBrowser,
    FileEntry,
    FilePage,
    SelectionLimits,
    SelectionReport,
    json_value,
    walk_selection,
)

# path -> entries directly under it; files are (name, size)
TREE: dict[str, list[tuple[str, int | None]]] = {
    "/in": [("a.csv", 10), ("b.csv", 20), ("deep", None)],
    "/in/deep": [("c.csv", 30), ("deeper", None)],
    "/in/deep/deeper": [("d.csv", 40)],
}


class TreeBrowser:
    """An in-memory file tree, two entries per page."""

    def __init__(self) -> None:
        self.listed: list[str] = []

    def _entry(self, parent: str, name: str, size: int | None) -> FileEntry:
        path = f"{parent}/{name}"
        return FileEntry(name, "directory" if path in TREE else "file", path, size)

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        self.listed.append(path)
        if path not in TREE:
            parent, _, name = path.rpartition("/")
            for child, size in TREE.get(parent, []):
                if child == name:
                    return FilePage((self._entry(parent, name, size),))
            raise DriverError(Reason.RESOURCE_NOT_FOUND, f"{path} does not exist")
        start = int(page_token or 0)
        entries = [self._entry(path, n, s) for n, s in TREE[path]][start : start + 2]
        more = start + 2 < len(TREE[path])
        return FilePage(tuple(entries), str(start + 2) if more else None)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)


NO_LIMITS = SelectionLimits()


def validate(paths: Sequence[str], limits: SelectionLimits = NO_LIMITS) -> SelectionReport:
    return asyncio.run(TreeBrowser().validate_selection(paths, limits))


def test_selection_totals_cover_every_page_and_level() -> None:
    report = validate(["/in"])
    assert (report.total_items, report.total_bytes, report.max_depth) == (4, 100, 3)
    assert report.violations == ()
    assert report.complete


def test_a_file_selected_twice_counts_once_and_a_selected_file_is_depth_zero() -> None:
    assert validate(["/in/deep/c.csv"]) == SelectionReport(1, 30, 0)
    report = validate(["/in/deep", "/in/deep/c.csv"])
    assert (report.total_items, report.total_bytes) == (2, 70)


def test_missing_paths_are_violations_and_the_rest_is_still_counted() -> None:
    report = validate(["/nope", "/in/a.csv"])
    assert [(v.code, v.path) for v in report.violations] == [("NotFound", "/nope")]
    assert report.total_items == 1


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (SelectionLimits(max_items=2), "TooManyItems"),
        (SelectionLimits(max_bytes=25), "TooManyBytes"),
        (SelectionLimits(max_depth=1), "TooDeep"),
    ],
)
def test_the_walk_stops_at_the_first_exceeded_limit(limits: SelectionLimits, code: str) -> None:
    browser = TreeBrowser()
    report = asyncio.run(browser.validate_selection(["/in"], limits))
    assert [v.code for v in report.violations] == [code]
    assert not report.complete
    assert "/in/deep/deeper" not in browser.listed


class Mailbox:
    """Folders that share an item, as a message with attachments is under two labels;
    every entry has an ID, which the browser also lists by."""

    def __init__(self) -> None:
        self.listed: list[str] = []

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        self.listed.append(path)
        if path in ("/inbox", "/invoices"):
            message = FileEntry("m1", "directory", f"{path}/m1", id="m1")
            return FilePage((message,))
        assert path == "m1"  # by its ID
        return FilePage((FileEntry("a.pdf", "file", "m1/1", 10, id="m1/1"),))

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)


def test_entries_with_ids_count_once_and_their_folders_are_walked_once() -> None:
    mailbox = Mailbox()
    report = asyncio.run(mailbox.validate_selection(["/inbox", "/invoices"], NO_LIMITS))
    assert (report.total_items, report.total_bytes) == (1, 10)
    assert mailbox.listed == ["/inbox", "m1", "/invoices"]


class Bottomless(TreeBrowser):
    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        return FilePage((FileEntry("down", "directory", f"{path}/down"),))


def test_a_walk_goes_no_deeper_than_its_bound_without_a_depth_limit() -> None:
    report = asyncio.run(Bottomless().validate_selection(["/"], NO_LIMITS))
    assert [v.code for v in report.violations] == ["TooDeep"]
    assert report.max_depth == MAX_WALK_DEPTH + 1
    assert not report.valid


class CountingBudget:
    def __init__(self) -> None:
        self.spent = 0

    async def spend(self) -> None:
        self.spent += 1


def test_a_drivers_file_session_spends_for_its_login_and_every_listing() -> None:
    browser, budget = TreeBrowser(), CountingBudget()

    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[FileBrowser]:
        yield browser

    async def walk() -> SelectionReport:
        async with budgeted(session(), budget, BudgetedFiles) as opened:
            return await opened.validate_selection(["/in"], NO_LIMITS)

    assert asyncio.run(walk()).total_items == 4
    assert budget.spent == 1 + len(browser.listed)


def test_the_command_budget_holds_requests_beyond_the_rate_limit() -> None:
    async def spend(budget: CommandBudget, times: int) -> None:
        for _ in range(times):
            await budget.spend()

    async def fourth_of_three_an_hour() -> bool:
        budget = CommandBudget((3, 3600.0))
        await spend(budget, 3)
        try:
            await asyncio.wait_for(budget.spend(), 0.05)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(fourth_of_three_an_hour())
    asyncio.run(spend(CommandBudget(None), 100))  # no rateLimit: nothing waits


def test_other_driver_errors_are_not_hidden_as_violations() -> None:
    class Refusing(TreeBrowser):
        async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
            raise DriverError(Reason.PERMISSION_DENIED, "no")

    with pytest.raises(DriverError):
        asyncio.run(Refusing().validate_selection(["/in"], NO_LIMITS))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sales.orders", ("sales", "orders")),
        ('"my.schema"."Orders"', ("my.schema", "Orders")),
        ('public."say ""hi"""', ("public", 'say "hi"')),
    ],
)
def test_table_names_split_into_schema_and_table(text: str, expected: tuple[str, str]) -> None:
    assert split_table_name(text) == expected


@pytest.mark.parametrize("text", ["orders", "a.b.c", ".orders", 'sales."open'])
def test_table_names_without_exactly_one_schema_are_refused(text: str) -> None:
    with pytest.raises(CommandError, match=r"SCHEMA\.TABLE"):
        split_table_name(text)


def test_sql_over_the_limit_or_empty_is_refused() -> None:
    check_sql("x" * 10_000)
    with pytest.raises(CommandError, match="10001 characters; at most 10000"):
        check_sql("x" * 10_001)
    with pytest.raises(CommandError, match="empty"):
        check_sql("  ")


def test_database_values_become_json() -> None:
    moment = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=1)
    assert json_value(decimal.Decimal("2.50")) == "2.50"
    assert json_value(moment) == "2025-01-02T03:04:05+00:00"
    assert json_value(b"\x00\xff") == "base64:AP8="
    assert json_value(float("nan")) == "nan"
    assert json_value({"k": [ident, None]}) == {"k": [str(ident), None]}


def test_a_verification_answers_its_request_or_a_later_one() -> None:
    requested = request_timestamp(datetime.datetime(2025, 1, 1, 12, 0, 0, 5, tzinfo=datetime.UTC))
    assert requested == "2025-01-01T12:00:00.000005Z"
    assert answers({"requestedAt": requested}, requested)
    assert answers({"requestedAt": "2025-01-01T12:00:01Z"}, requested)
    assert not answers({"requestedAt": "2025-01-01T12:00:00Z"}, requested)
    assert not answers({"requestedAt": None}, requested)
    assert not answers({"requestedAt": "by hand"}, requested)
