"""Discovery's SaaS file browsers against local stand-ins of Google Drive, Microsoft Graph,
Dropbox and Gmail that answer as their vendors document (tests/support/saas_files.py,
with the facts and their sources in tests/support/file_api_facts/).

The connector is the catalogue entry from deploy/connectors/, the Connection's config and
credentials go through the operator's own resolution, and every URL variable points at
the stand-in on 127.0.0.1; the browsers run under an egress policy that allows loopback
only, or (where the test says) under the entry's own egress hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from patchbay.api import ClusterConnector
from patchbay.api.connection import ConnectionSpec
from patchbay.api.connector import ConnectorSpec, FileApi
from patchbay.api.reasons import Reason
from patchbay.cli import discovery
from patchbay.cli.caller import CommandError
from patchbay.core.config import resolve_config
from patchbay.core.credentials import resolve_credentials
from patchbay.core.egress import EgressPolicy, connector_egress, parse_networks
from patchbay.core.verification import build_verify_request
from patchbay.drivers import available_drivers, saasfiles
from patchbay.drivers.base import (
    DriverError,
    Egress,
    FileBrowser,
    FileEntry,
    SelectionLimits,
    VerifyRequest,
)
from patchbay.drivers.saasfiles import browse_saas_files
from saas_files import (
    CLIENT_SECRET,
    ENTRIES,
    INCOMING_BYTES,
    MANY,
    README_BYTES,
    REFRESH_TOKEN,
    FileApiServer,
    Item,
    connection_config,
    credentials,
    serve_file_api,
)
from tests.conftest import REPO_ROOT

T = TypeVar("T")
LOOPBACK_ONLY = EgressPolicy(allowed=parse_networks(["127.0.0.0/8", "::1/128"]))
SECRET_NAME = "file-api-credentials"
TIMEOUT = 15.0
# Where the stand-ins' common tree is in each API's paths.
TREE_APIS: dict[FileApi, str] = {
    "googleDrive": "/My Drive",
    "msGraphDrive": "",
    "dropbox": "",
}
# Each API's ID of the tree's /incoming/orders.csv.
ORDERS_IDS: dict[FileApi, str] = {
    "googleDrive": "F-orders",
    "msGraphDrive": "F-orders",
    "dropbox": "id:F-orders",
}
MESSAGE = "18c2f0a1b2c3d4e5"  # in INBOX and Invoices: invoice-11.pdf, and logo.png deeper


def connector(api: FileApi) -> ConnectorSpec:
    path = REPO_ROOT / "deploy" / "connectors" / f"{ENTRIES[api]}.yaml"
    return ClusterConnector.model_validate(yaml.safe_load(Path(path).read_text())).spec


def verify_request(spec: ConnectorSpec, api: FileApi, server: FileApiServer) -> VerifyRequest:
    connection = ConnectionSpec.model_validate(
        {
            "connectorRef": {"name": ENTRIES[api]},
            "config": connection_config(api, server),
            "credentials": {"secretRef": {"name": SECRET_NAME}},
        }
    )
    config = resolve_config(spec, connection.config)
    wanted = {variable.key for variable in config.secret_variables}
    given = {key: value for key, value in credentials().items() if key in wanted}
    resolved = resolve_credentials(connection, config.secret_variables, {SECRET_NAME: given})
    return build_verify_request(spec, connection, config, resolved, TIMEOUT)


class CountingBudget:
    def __init__(self) -> None:
        self.spent = 0

    async def spend(self) -> None:
        self.spent += 1


Operation = Callable[[FileBrowser], Awaitable[T]]


async def _browse(
    api: FileApi,
    operation: Operation[T],
    answer_with: str | None,
    egress: Callable[[ConnectorSpec], Egress],
    prepare: Callable[[FileApiServer], None],
) -> tuple[T, FileApiServer, CountingBudget]:
    spec = connector(api)
    async with serve_file_api(api) as server:
        prepare(server)
        budget = CountingBudget()
        request = verify_request(spec, api, server)
        try:
            async with browse_saas_files(api, request, egress(spec), budget) as browser:
                server.answer_with = answer_with
                result = await operation(browser)
        except DriverError as exc:
            # nothing the Connection holds as a secret shows in a message
            assert CLIENT_SECRET not in exc.message and REFRESH_TOKEN not in exc.message
            assert not any(token in exc.message for token in server.issued)
            raise
        return result, server, budget


def browse(
    api: FileApi,
    operation: Operation[T],
    *,
    answer_with: str | None = None,
    egress: Callable[[ConnectorSpec], Egress] = lambda spec: LOOPBACK_ONLY,
    prepare: Callable[[FileApiServer], None] = lambda server: None,
) -> tuple[T, FileApiServer, CountingBudget]:
    return asyncio.run(_browse(api, operation, answer_with, egress, prepare))


def refused(api: FileApi, operation: Operation[object], **kwargs: object) -> DriverError:
    with pytest.raises(DriverError) as raised:
        browse(api, operation, **kwargs)  # type: ignore[arg-type]
    return raised.value


async def every_page(browser: FileBrowser, path: str) -> list[FileEntry]:
    entries: list[FileEntry] = []
    token: str | None = None
    while True:
        page = await browser.list_files(path, token)
        entries += page.entries
        token = page.next_page_token
        if token is None:
            return entries


def by_name(entries: list[FileEntry]) -> dict[str, FileEntry]:
    return {entry.name: entry for entry in entries}


# ----- the tree of the file APIs ---------------------------------------------------


@pytest.mark.parametrize("api", TREE_APIS)
def test_a_folder_lists_files_and_folders_with_id_path_kind_size_type_and_time(
    api: FileApi,
) -> None:
    root = TREE_APIS[api]
    found, _, _ = browse(api, lambda browser: every_page(browser, root))
    entries = by_name(found)
    # Drive's trashed file and shortcut are left out; its two files of one name are in twins
    assert set(entries) - {"twins"} == {"readme.txt", "incoming", "many"}
    readme, incoming = entries["readme.txt"], entries["incoming"]
    assert (readme.kind, readme.size, readme.path) == ("file", README_BYTES, f"{root}/readme.txt")
    assert readme.id and readme.modified is not None
    assert readme.mime_type == (None if api == "dropbox" else "text/plain")
    assert (incoming.kind, incoming.size, incoming.path) == ("directory", None, f"{root}/incoming")
    assert incoming.id


@pytest.mark.parametrize("api", TREE_APIS)
def test_pages_follow_the_next_page_token_to_the_last(api: FileApi) -> None:
    path = f"{TREE_APIS[api]}/many"

    async def pages(browser: FileBrowser) -> tuple[int, list[FileEntry]]:
        first = await browser.list_files(path)
        assert first.next_page_token is not None
        return len(first.entries), await every_page(browser, path)

    (first, found), _, _ = browse(api, pages)
    assert first < MANY
    assert sorted(entry.name for entry in found) == [f"f{n}" for n in range(MANY)]


@pytest.mark.parametrize("api", TREE_APIS)
def test_a_folder_lists_alike_by_its_path_and_by_its_id(api: FileApi) -> None:
    root = TREE_APIS[api]

    async def both(browser: FileBrowser) -> tuple[list[FileEntry], list[FileEntry]]:
        incoming = by_name(await every_page(browser, root))["incoming"]
        assert incoming.id is not None
        return await every_page(browser, f"{root}/incoming"), await every_page(browser, incoming.id)

    (by_path, by_id), _, _ = browse(api, both)
    assert by_path == by_id
    assert {entry.path for entry in by_path} == {
        f"{root}/incoming/orders.csv",
        f"{root}/incoming/2024",
    }


@pytest.mark.parametrize("api", TREE_APIS)
def test_a_file_lists_alone_by_its_path_and_by_its_id(api: FileApi) -> None:
    path = f"{TREE_APIS[api]}/incoming/orders.csv"

    async def both(browser: FileBrowser) -> tuple[list[FileEntry], list[FileEntry]]:
        return list((await browser.list_files(path)).entries), list(
            (await browser.list_files(ORDERS_IDS[api])).entries
        )

    (by_path, by_id), _, _ = browse(api, both)
    assert [(e.name, e.kind, e.size, e.path) for e in by_path] == [("orders.csv", "file", 5, path)]
    assert [(e.name, e.size, e.id, e.path) for e in by_id] == [
        ("orders.csv", 5, ORDERS_IDS[api], ORDERS_IDS[api])
    ]


@pytest.mark.parametrize("api", TREE_APIS)
def test_a_path_where_nothing_is_is_resource_not_found(api: FileApi) -> None:
    error = refused(api, lambda browser: browser.list_files(f"{TREE_APIS[api]}/incoming/nope"))
    assert error.code == Reason.RESOURCE_NOT_FOUND


@pytest.mark.parametrize("api", TREE_APIS)
def test_validate_selection_counts_items_bytes_and_depth_over_every_page(api: FileApi) -> None:
    root = TREE_APIS[api]

    async def selections(browser: FileBrowser) -> list[tuple[int, int, int, bool]]:
        return [
            (report.total_items, report.total_bytes, report.max_depth, report.valid)
            for report in [
                await browser.validate_selection(
                    [f"{root}/incoming", f"{root}/readme.txt", f"{root}/incoming/orders.csv"],
                    SelectionLimits(),
                ),
                await browser.validate_selection([f"{root}/many"], SelectionLimits()),
            ]
        ]

    found, _, _ = browse(api, selections)
    # orders.csv, selected twice, counts once
    assert found == [(4, INCOMING_BYTES + README_BYTES, 2, True), (MANY, MANY, 1, True)]


@pytest.mark.parametrize("api", TREE_APIS)
def test_a_violated_limit_ends_the_walk_and_makes_the_selection_invalid(api: FileApi) -> None:
    limits = SelectionLimits(max_items=2)
    report, _, _ = browse(
        api, lambda browser: browser.validate_selection([f"{TREE_APIS[api]}/many"], limits)
    )
    assert [v.code for v in report.violations] == ["TooManyItems"]
    assert not report.valid and not report.complete


@pytest.mark.parametrize("api", [*TREE_APIS, "gmailAttachments"])
def test_every_request_spends_from_the_budget_first_the_token_request_too(api: FileApi) -> None:
    path = f"{TREE_APIS[api]}/incoming" if api in TREE_APIS else "/INBOX"
    _, server, budget = browse(
        api, lambda browser: browser.validate_selection([path], SelectionLimits())
    )
    assert budget.spent == len(server.seen) > 2


@pytest.mark.parametrize("api", [*TREE_APIS, "gmailAttachments"])
def test_a_page_token_the_provider_did_not_give_is_config_invalid(api: FileApi) -> None:
    path = f"{TREE_APIS[api]}/many" if api in TREE_APIS else "/INBOX"
    error = refused(api, lambda browser: browser.list_files(path, "bm90LWEtdG9rZW4"))
    assert error.code == Reason.CONFIG_INVALID


@pytest.mark.parametrize("api", [*TREE_APIS, "gmailAttachments"])
def test_a_page_token_beyond_its_bound_is_refused_before_anything_is_asked(api: FileApi) -> None:
    error, server = None, None

    def keep(started: FileApiServer) -> None:
        nonlocal server
        server = started

    with pytest.raises(DriverError) as raised:
        browse(
            api,
            lambda browser: browser.list_files("/", "t" * (saasfiles.MAX_PAGE_TOKEN_LENGTH + 1)),
            prepare=keep,
        )
    error = raised.value
    assert error.code == Reason.CONFIG_INVALID
    assert server is not None and server.api_requests() == []


@pytest.mark.parametrize(
    ("api", "answer", "reason", "retry_after"),
    [
        ("googleDrive", "unauthenticated", Reason.AUTHENTICATION_FAILED, None),
        ("googleDrive", "userRateLimitExceeded", Reason.RATE_LIMITED, None),
        ("googleDrive", "tooManyRequests", Reason.RATE_LIMITED, None),
        ("msGraphDrive", "unauthenticated", Reason.AUTHENTICATION_FAILED, None),
        ("msGraphDrive", "throttled", Reason.RATE_LIMITED, 120.0),
        ("msGraphDrive", "serverTooBusy", Reason.RATE_LIMITED, 30.0),
        ("dropbox", "expiredAccessToken", Reason.AUTHENTICATION_FAILED, None),
        ("dropbox", "missingScope", Reason.PERMISSION_DENIED, None),
        ("dropbox", "tooManyRequests", Reason.RATE_LIMITED, 300.0),
        ("gmailAttachments", "unauthenticated", Reason.AUTHENTICATION_FAILED, None),
        ("gmailAttachments", "userRateLimitExceeded", Reason.RATE_LIMITED, None),
        ("gmailAttachments", "tooManyConcurrentRequests", Reason.RATE_LIMITED, None),
    ],
)
def test_documented_error_answers_get_the_reason_verification_gives_them(
    api: FileApi, answer: str, reason: Reason, retry_after: float | None
) -> None:
    path = TREE_APIS.get(api, "/INBOX")
    error = refused(api, lambda browser: browser.list_files(path), answer_with=answer)
    assert (error.code, error.retry_after) == (reason, retry_after)


@pytest.mark.parametrize("api", [*TREE_APIS, "gmailAttachments"])
def test_the_entrys_egress_hosts_refuse_anything_else_before_it_is_sent(api: FileApi) -> None:
    def keep(started: FileApiServer) -> None:
        nonlocal server
        server = started

    server: FileApiServer | None = None
    error = refused(
        api,
        lambda browser: browser.list_files("/"),
        egress=lambda spec: connector_egress(LOOPBACK_ONLY, spec),
        prepare=keep,
    )
    assert error.code == Reason.EGRESS_DENIED
    assert server is not None and server.seen == []


def test_an_answer_beyond_its_bound_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saasfiles, "MAX_ANSWER_BYTES", 200)
    error = refused("dropbox", lambda browser: browser.list_files("/incoming"))
    assert error.code == Reason.PROTOCOL_ERROR
    assert "longer than 200 bytes" in error.message


@pytest.mark.parametrize("api", ["googleDrive", "msGraphDrive"])
def test_a_name_beyond_its_bound_is_cut_and_its_entry_named_by_its_id(api: FileApi) -> None:
    def add_long_name(server: FileApiServer) -> None:
        long = Item("F-long", "x" * (saasfiles.MAX_NAME_LENGTH + 500), 1)
        server.root.children.append(long)  # type: ignore[attr-defined]

    root = TREE_APIS[api]
    found, _, _ = browse(api, lambda browser: every_page(browser, root), prepare=add_long_name)
    (long,) = [entry for entry in found if entry.name.startswith("xxx")]
    assert len(long.name) == saasfiles.MAX_NAME_LENGTH and long.name.endswith("…")
    assert long.path == long.id == "F-long"


# ----- Google Drive ----------------------------------------------------------------


def test_drive_root_holds_my_drive_and_the_shared_drives() -> None:
    page, server, _ = browse("googleDrive", lambda browser: browser.list_files("/"))
    assert [(e.name, e.path) for e in page.entries] == [
        ("My Drive", "/My Drive"),
        ("Shared drives", "/Shared drives"),
    ]
    assert server.api_requests() == []  # the root is known without asking


def test_drive_shared_drives_list_by_name_and_by_id_over_their_own_corpus() -> None:
    async def listings(browser: FileBrowser) -> list[list[FileEntry]]:
        return [
            await every_page(browser, "/Shared drives"),
            await every_page(browser, "/Shared drives/Team"),
            await every_page(browser, "0ATEAM"),
        ]

    (drives, by_name_, by_id), _, _ = browse("googleDrive", listings)
    assert [(e.name, e.id, e.kind) for e in drives] == [
        ("Team", "0ATEAM", "directory"),
        ("Archive", "0AOTHER", "directory"),
    ]
    # the stand-in lists a shared drive's files only with corpora=drive and its driveId
    assert [(e.name, e.size, e.path) for e in by_name_] == [
        ("plans.txt", 8, "/Shared drives/Team/plans.txt")
    ]
    assert [e.path for e in by_id] == ["/Shared drives/Team/plans.txt"]


def test_drive_items_of_one_name_are_told_apart_by_id() -> None:
    async def twins(browser: FileBrowser) -> tuple[list[FileEntry], int, int]:
        found = await every_page(browser, "/My Drive/twins")
        report = await browser.validate_selection(["/My Drive/twins"], SelectionLimits())
        return found, report.total_items, report.total_bytes

    (found, items, total), _, _ = browse("googleDrive", twins)
    assert sorted((e.name, e.id, e.size) for e in found) == [
        ("a.txt", "F-a1", 1),
        ("a.txt", "F-a2", 2),
    ]
    assert (items, total) == (2, 3)
    error = refused("googleDrive", lambda browser: browser.list_files("/My Drive/twins/a.txt"))
    assert error.code == Reason.CONFIG_INVALID
    assert "give the ID" in error.message


def test_drive_walks_list_each_folder_by_its_id_at_one_request_a_page() -> None:
    _, server, _ = browse(
        "googleDrive",
        lambda browser: browser.validate_selection(["/My Drive/incoming"], SelectionLimits()),
    )
    # the name incoming, then incoming and 2024 by their IDs: nothing resolved twice
    assert server.api_requests() == ["GET /drive/v3/files"] * 3


# ----- Microsoft Graph -------------------------------------------------------------


def test_graph_lists_below_an_item_id_by_the_path_relative_to_it() -> None:
    found, _, _ = browse("msGraphDrive", lambda browser: every_page(browser, "D-incoming/2024"))
    assert sorted((e.name, e.path) for e in found) == [
        ("feb.csv", "D-incoming/2024/feb.csv"),
        ("jan.csv", "D-incoming/2024/jan.csv"),
    ]


def test_graph_page_tokens_reach_only_the_graph_endpoint_in_use() -> None:
    import base64

    elsewhere = base64.urlsafe_b64encode(b"//attacker.example/v1.0/x").decode()
    error = refused("msGraphDrive", lambda browser: browser.list_files("/many", elsewhere))
    assert error.code == Reason.CONFIG_INVALID


# ----- Gmail -----------------------------------------------------------------------


def test_gmail_root_lists_the_labels_by_name_with_their_ids() -> None:
    found, _, _ = browse("gmailAttachments", lambda browser: every_page(browser, "/"))
    assert [(e.name, e.id, e.path, e.kind) for e in found] == [
        ("INBOX", "INBOX", "/INBOX", "directory"),
        ("Invoices", "Label_1", "/Label_1", "directory"),
        ("SENT", "SENT", "/SENT", "directory"),
        ("Travel/2026", "Label_2", "/Label_2", "directory"),
    ]


def test_gmail_a_label_or_a_search_lists_only_messages_with_attachments() -> None:
    async def folders(browser: FileBrowser) -> list[list[str]]:
        return [
            [e.name for e in await every_page(browser, path)]
            for path in ("/INBOX", "/Invoices", "/Label_1", "/q:from:billing%40example.com")
        ]

    (inbox, by_name_, by_id, search), _, _ = browse("gmailAttachments", folders)
    assert MESSAGE in inbox and "18c2f0a1b2c3d4e6" not in inbox  # without attachments
    assert len(inbox) == 6
    assert by_name_ == by_id == search == [MESSAGE, "18c2f0a1b2c3d4e7"]


def test_gmail_a_message_lists_its_attachments_nested_ones_too() -> None:
    found, _, _ = browse(
        "gmailAttachments", lambda browser: every_page(browser, f"/INBOX/{MESSAGE}")
    )
    assert [(e.name, e.id, e.path, e.size, e.mime_type) for e in found] == [
        ("invoice-11.pdf", f"{MESSAGE}/1", f"/INBOX/{MESSAGE}/1", 1200, "application/pdf"),
        ("logo.png", f"{MESSAGE}/2.0.1", f"/INBOX/{MESSAGE}/2.0.1", 300, "image/png"),
    ]
    assert all(entry.modified is not None for entry in found)


def test_gmail_an_attachment_lists_alone_by_its_path_and_by_its_id() -> None:
    async def both(browser: FileBrowser) -> list[tuple[str, str]]:
        pages = [
            await browser.list_files(f"/INBOX/{MESSAGE}/2.0.1"),
            await browser.list_files(f"{MESSAGE}/2.0.1"),
        ]
        return [(e.name, e.path) for page in pages for e in page.entries]

    found, _, _ = browse("gmailAttachments", both)
    assert found == [("logo.png", f"/INBOX/{MESSAGE}/2.0.1"), ("logo.png", f"{MESSAGE}/2.0.1")]


def test_gmail_attachment_ids_stay_while_gmails_own_change_at_every_read() -> None:
    async def twice(browser: FileBrowser) -> list[list[str | None]]:
        return [[e.id for e in await every_page(browser, MESSAGE)] for _ in range(2)]

    (first, second), _, _ = browse("gmailAttachments", twice)
    assert first == second == [f"{MESSAGE}/1", f"{MESSAGE}/2.0.1"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/Nope", Reason.RESOURCE_NOT_FOUND),  # no such label
        ("/INBOX/18c2f0a1b2c3ffff", Reason.RESOURCE_NOT_FOUND),  # no such message
        (f"/INBOX/{MESSAGE}/9", Reason.RESOURCE_NOT_FOUND),  # no such part
        ("/INBOX/not-a-message", Reason.CONFIG_INVALID),  # Gmail's 400 Invalid id value
    ],
)
def test_gmail_what_is_not_there_is_named(path: str, reason: Reason) -> None:
    assert refused("gmailAttachments", lambda browser: browser.list_files(path)).code == reason


def test_gmail_a_message_under_two_selected_labels_counts_once() -> None:
    report, server, _ = browse(
        "gmailAttachments",
        lambda browser: browser.validate_selection(["/INBOX", "/Label_1"], SelectionLimits()),
    )
    # INBOX: the invoice message (2 attachments) and 5 more; Invoices adds one message
    assert (report.total_items, report.total_bytes, report.max_depth) == (
        8,
        1200 + 300 + 50 + 80,
        2,
    )
    reads = [seen for seen in server.seen if seen.startswith("GET /gmail/v1/users/me/messages/")]
    assert len(reads) == len(set(reads)) == 7


# ----- through the CLI's discovery -------------------------------------------------


def target(
    api: FileApi, server: FileApiServer, rate_limit: tuple[int, float] | None
) -> discovery.Target:
    """A resolved Connection of a copy of the entry that allows the stand-in's host."""
    spec = connector(api).model_copy(update={"egress": None})
    return discovery.Target(
        "shop",
        "files",
        available_drivers()[spec.driver],
        verify_request(spec, api, server),
        2.0,
        spec,
        rate_limit,
        api,
    )


def test_a_walk_beyond_the_rate_limit_waits_for_it_until_the_commands_timeout() -> None:
    async def walk() -> tuple[str, list[str]]:
        async with serve_file_api("dropbox") as server:
            with pytest.raises(CommandError) as raised:
                await discovery.validate_selection(
                    target("dropbox", server, (3, 3600.0)), LOOPBACK_ONLY, ["/"], SelectionLimits()
                )
            return str(raised.value), server.seen

    message, seen = asyncio.run(walk())
    assert message.startswith("Timeout: ")
    assert len(seen) == 3  # the token request and two listings: the budget held


def test_discovery_lists_through_the_file_api_the_connector_names() -> None:
    async def files() -> dict[str, object]:
        async with serve_file_api("googleDrive") as server:
            return await discovery.files(
                target("googleDrive", server, None), LOOPBACK_ONLY, "/My Drive/incoming", None
            )

    listing = asyncio.run(files())
    assert listing["entries"] == [
        {
            "id": "D-2024",
            "name": "2024",
            "path": "/My Drive/incoming/2024",
            "kind": "directory",
            "size": None,
            "mimeType": "application/vnd.google-apps.folder",
            "modifiedAt": "2026-11-02T10:15:30.123000+00:00",
        },
        {
            "id": "F-orders",
            "name": "orders.csv",
            "path": "/My Drive/incoming/orders.csv",
            "kind": "file",
            "size": 5,
            "mimeType": "text/csv",
            "modifiedAt": "2026-11-02T10:15:30.123000+00:00",
        },
    ]


def test_discovery_refuses_an_http_connector_that_names_no_file_api() -> None:
    spec = connector("dropbox").model_copy(update={"discovery": None})
    with pytest.raises(CommandError, match=r"spec\.discovery\.files"):
        discovery.file_api(spec, available_drivers()["http"])
