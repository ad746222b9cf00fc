"""File browsing through the list APIs of SaaS file providers, for the CLI's discovery.

An http connector names its provider in ``spec.discovery.files.api``, and this module
gives the ``FileBrowser`` for it:

- ``googleDrive``: Google Drive API v3 (files.list with ``q`` on parents, files.get,
  drives.list for shared drives);
- ``msGraphDrive``: Microsoft Graph, the default document library of the SharePoint site
  in the variable ``site`` (children of a driveItem, by path or by ID);
- ``dropbox``: Dropbox API v2 (files/list_folder, list_folder/continue, get_metadata);
- ``gmailAttachments``: Gmail API v1, the attachments of messages as files, by label or
  search (labels.list, messages.list, messages.get).

Every request goes through the http driver's exchange (``http_session``), so discovery
has the verification's OAuth 2.0 grant, egress resolution of every host (the connector's
egress hosts included), redirect rules, scrubbing of credentials, and classification of
error answers: each provider first reads its own documented error bodies, then the
connector's httpErrors rules and the status decide. Every request, the token request
included, first spends from the caller's budget (the connector's rateLimit).

Everything read is bounded: an answer at most MAX_ANSWER_BYTES, a page at most
MAX_PAGE_ENTRIES entries, a name at most MAX_NAME_LENGTH characters (cut beyond), a path
at most MAX_PATH_LENGTH characters (an entry whose path would be longer, or whose name
cannot be a path segment, is named by its ID), a page token at most
MAX_PAGE_TOKEN_LENGTH characters, and the places remembered for a walk at most
REMEMBERED_PLACES. docs/discovery.md describes each provider's paths, IDs and paging.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Generic, TypeVar
from urllib.parse import quote, unquote

from yarl import URL

from patchbay.api.connector import FileApi
from patchbay.api.reasons import Reason
from patchbay.drivers.base import (
    DriverError,
    Egress,
    FileBrowser,
    FileEntry,
    FileKind,
    FilePage,
    RequestBudget,
    SelectionLimits,
    SelectionReport,
    VerifyRequest,
    config_text,
    walk_selection,
)
from patchbay.drivers.http import Exchange, HttpAnswer, http_session
from patchbay.drivers.text import printable

# One answer of a list API: a page of a thousand entries takes some hundred kilobytes.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# Entries one page may hold; providers page at 1,000 or fewer (Dropbox's limit is
# approximate, so a little more is allowed).
MAX_PAGE_ENTRIES = 2000
MAX_NAME_LENGTH = 1024
# As long as a listFiles check's path may be.
MAX_PATH_LENGTH = 4096
MAX_PAGE_TOKEN_LENGTH = 8192
# IDs of the providers are short; longer ones, or ones with a slash, are no usable IDs.
MAX_ID_LENGTH = 1024
# Folders a session remembers (ID -> where it is), so that a walk lists each by its ID
# at one request a page; the oldest are forgotten.
REMEMBERED_PLACES = 4096
# A path of more segments than this is refused before anything is sent.
MAX_PATH_SEGMENTS = 128

P = TypeVar("P")
# A provider's reading of an error answer: the error it means, or None to let the
# connector's rules and the status decide.
Refusal = Callable[[HttpAnswer], Exception | None]
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def _config_invalid(message: str) -> DriverError:
    return DriverError(Reason.CONFIG_INVALID, message)


def _only(found: list[dict[str, object]], none: str, several: str) -> dict[str, object]:
    """The one item a lookup by name found; a name Drive lets several items share is
    refused rather than guessed."""
    if not found:
        raise _not_found(none)
    if len(found) > 1:
        raise _config_invalid(
            f"{several}: give the ID of the one you mean (the listing shows each one's ID)"
        )
    return found[0]


def _not_found(message: str) -> DriverError:
    return DriverError(Reason.RESOURCE_NOT_FOUND, message)


class _Api:
    """Requests to one provider through the exchange; every answer a JSON object."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def url(self, path: str, query: Mapping[str, str] | None = None) -> URL:
        """The base URL and ``path``, whose parts the caller has percent-encoded."""
        url = URL(str(self.exchange.base).rstrip("/") + path, encoded=True)
        return url.update_query(query) if query else url

    def fail(self, code: Reason, message: str) -> DriverError:
        return self.exchange.fail(code, message)

    async def call(
        self,
        method: str,
        url: URL,
        *,
        body: Mapping[str, object] | None = None,
        refusal: Refusal | None = None,
    ) -> dict[str, object]:
        """The JSON object a 200 answer holds; any other answer raises what the provider's
        ``refusal`` makes of it, or else what the connector's rules and the status say."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        answer = await self.exchange.follow(
            method,
            self.exchange.with_credential_query(url),
            headers,
            body=data,
            read_limit=MAX_ANSWER_BYTES,
        )
        if answer.status == 200:
            if answer.oversized:
                raise self.fail(
                    Reason.PROTOCOL_ERROR,
                    f"{answer.label}: the answer is longer than {MAX_ANSWER_BYTES} bytes",
                )
            if not isinstance(answer.document, dict):
                raise self.fail(
                    Reason.PROTOCOL_ERROR,
                    f"{answer.label}: HTTP 200, but the answer is not a JSON object",
                )
            return answer.document
        refused = refusal(answer) if refusal is not None else None
        raise refused or self.exchange.error_for(answer, (200,))

    def refused_request(self, answer: HttpAnswer, said: str) -> DriverError:
        """A 400: the provider refused what was asked (a path, a query, a page token)."""
        detail = f": {printable(said, 200)}" if said.strip() else ""
        return self.fail(
            Reason.CONFIG_INVALID, f"{answer.label}: HTTP 400, the request was refused{detail}"
        )


class _Places(Generic[P]):
    """What a session learnt of the folders it listed, by ID, most recent last."""

    def __init__(self, bound: int = REMEMBERED_PLACES) -> None:
        self._bound = bound
        self._known: OrderedDict[str, P] = OrderedDict()

    def remember(self, key: str, place: P) -> None:
        self._known[key] = place
        self._known.move_to_end(key)
        while len(self._known) > self._bound:
            self._known.popitem(last=False)

    def get(self, key: str) -> P | None:
        return self._known.get(key)


# ----- reading answers -------------------------------------------------------------


def _objects(
    value: object, label: str, api: _Api, limit: int = MAX_PAGE_ENTRIES
) -> list[dict[str, object]]:
    """A list of JSON objects (absent: none), at most ``limit`` of them."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise api.fail(Reason.PROTOCOL_ERROR, f"{label}: the answer is not a list of items")
    if len(value) > limit:
        raise api.fail(Reason.PROTOCOL_ERROR, f"{label}: the answer holds more than {limit} items")
    return value


def _text(item: Mapping[str, object], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value else None


def _item_id(item: Mapping[str, object], key: str, api: _Api) -> str:
    """An item's ID: short, and with no slash or white space, since paths start with it."""
    value = item.get(key)
    if not isinstance(value, str) or not _usable_id(value):
        raise api.fail(Reason.PROTOCOL_ERROR, "the provider answered an item without a usable ID")
    return value


def _usable_id(value: str) -> bool:
    return (
        len(value) <= MAX_ID_LENGTH and "/" not in value and bool(_VISIBLE_ASCII.fullmatch(value))
    )


def _size(value: object) -> int | None:
    """Bytes, given as a number or (Google's int64) as decimal text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def _timestamp(value: object) -> datetime.datetime | None:
    """An RFC 3339 time such as 2024-05-12T15:50:38.123Z."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def _next_token(value: object, api: _Api, label: str) -> str | None:
    """The provider's token of the next page, which the user passes back as it is."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _is_page_token(value):
        raise api.fail(Reason.PROTOCOL_ERROR, f"{label}: the next page's token is not usable")
    return value


def _is_page_token(value: str) -> bool:
    return len(value) <= MAX_PAGE_TOKEN_LENGTH and bool(_VISIBLE_ASCII.fullmatch(value))


def _given_token(token: str | None) -> str | None:
    """A page token the user gave: visible ASCII of a bounded length, or ConfigInvalid."""
    if token is None:
        return None
    if not _is_page_token(token):
        raise _config_invalid("the page token is not valid")
    return token


def _segments(path: str) -> list[str]:
    """The names of a path, or of what follows the ID it starts with."""
    if len(path) > MAX_PATH_LENGTH:
        raise _config_invalid(f"the path is longer than {MAX_PATH_LENGTH} characters")
    if any(c in path for c in "\x00\r\n"):
        raise _config_invalid("the path contains a line break or NUL character")
    parts = [part for part in path.split("/") if part]
    if len(parts) > MAX_PATH_SEGMENTS:
        raise _config_invalid(f"the path has more than {MAX_PATH_SEGMENTS} levels")
    return parts


def _cut(name: str) -> str:
    """A name as shown: at most MAX_NAME_LENGTH characters, the last one … when cut."""
    return name if len(name) <= MAX_NAME_LENGTH else name[: MAX_NAME_LENGTH - 1] + "…"


def _placed(parent: str, name: str, item_id: str) -> tuple[str, str]:
    """An entry's name as shown and its path: the parent's path and the name, or the
    item's ID where the name cannot be a path segment or the path would be too long."""
    shown = _cut(name)
    path = f"{parent.rstrip('/')}/{name}"
    if shown != name or "/" in name or len(path) > MAX_PATH_LENGTH:
        return shown, item_id
    return shown, path


def _sorted(entries: Sequence[FileEntry]) -> tuple[FileEntry, ...]:
    return tuple(sorted(entries, key=lambda entry: entry.name))


def _quoted(names: Sequence[str]) -> str:
    return "/".join(quote(name, safe="") for name in names)


def _bad_request(api: _Api) -> Refusal:
    """A 400 of Google or Graph (an invalid path, search, ID or page token) refuses what
    the user asked, with the message of their error body ({"error": {"message": …}});
    the rest is left to the connector's rules and the status."""

    def refusal(answer: HttpAnswer) -> Exception | None:
        if answer.status != 400:
            return None
        document = answer.document
        error = document.get("error") if isinstance(document, dict) else None
        said = error.get("message") if isinstance(error, dict) else None
        return api.refused_request(answer, said if isinstance(said, str) else "")

    return refusal


# ----- Google Drive ----------------------------------------------------------------


def _drive_literal(text: str) -> str:
    """A string in a Drive query: quoted, with quotes and backslashes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


DRIVE_FOLDER = "application/vnd.google-apps.folder"
DRIVE_SHORTCUT = "application/vnd.google-apps.shortcut"
MY_DRIVE = "My Drive"
SHARED_DRIVES = "Shared drives"
_DRIVE_ITEM_FIELDS = "id,name,mimeType,size,modifiedTime"
_DRIVE_PAGE_SIZE = 1000  # files.list's largest page
_SHARED_DRIVES_PAGE_SIZE = 100  # drives.list's largest page
# Shortcuts point at items listed where they live; a walk following them could loop.
_NOT_A_SHORTCUT = f"mimeType != {_drive_literal(DRIVE_SHORTCUT)}"


@dataclass(frozen=True)
class _DriveFolder:
    id: str
    drive_id: str | None  # the shared drive it is in; None in My Drive
    path: str  # as shown


class GoogleDriveBrowser:
    """Google Drive as Drive for desktop shows it: the root holds ``/My Drive`` and
    ``/Shared drives``; a path may also start with a file or folder ID."""

    def __init__(self, api: _Api) -> None:
        self._api = api
        self._refusal = _bad_request(api)
        self._folders: _Places[_DriveFolder] = _Places()
        self._folders.remember("root", _DriveFolder("root", None, f"/{MY_DRIVE}"))

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        token = _given_token(page_token)
        parts = _segments(path)
        if not parts:
            if token is not None:
                raise _config_invalid("the page token is not valid: the root has one page")
            return FilePage(
                (
                    FileEntry(MY_DRIVE, "directory", f"/{MY_DRIVE}", id="root"),
                    FileEntry(SHARED_DRIVES, "directory", f"/{SHARED_DRIVES}"),
                )
            )
        found: _DriveFolder | FileEntry
        if path.startswith("/"):
            top, rest = parts[0], parts[1:]
            if top == MY_DRIVE:
                found = _DriveFolder("root", None, f"/{MY_DRIVE}")
            elif top == SHARED_DRIVES:
                if not rest:
                    return await self._shared_drives(token)
                found = await self._shared_drive(rest[0])
                rest = rest[1:]
            else:
                raise _not_found(
                    f"nothing exists at {path}: the root holds /{MY_DRIVE} and /{SHARED_DRIVES}"
                )
        else:
            found = await self._by_id(parts[0])
            rest = parts[1:]
        for name in rest:
            if isinstance(found, FileEntry):
                raise _not_found(f"nothing exists at {path}: {found.name} is a file")
            found = await self._child(found, name)
        if isinstance(found, FileEntry):
            return FilePage((replace(found, path=path),))
        return await self._children(found, token)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)

    def _query(self, folder: _DriveFolder) -> dict[str, str]:
        """What files.list needs for items of any drive, and of the folder's shared drive:
        the user corpus leaves out shared drive files the user has not opened."""
        query = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
        if folder.drive_id is not None:
            query |= {"corpora": "drive", "driveId": folder.drive_id}
        return query

    def _entry(self, parent: _DriveFolder, item: Mapping[str, object]) -> FileEntry:
        """An item of ``parent``; a folder is remembered, to be listed by its ID."""
        item_id = _item_id(item, "id", self._api)
        mime_type = _text(item, "mimeType")
        kind: FileKind = "directory" if mime_type == DRIVE_FOLDER else "file"
        name, path = _placed(parent.path, _text(item, "name") or "", item_id)
        if kind == "directory":
            self._folders.remember(item_id, _DriveFolder(item_id, parent.drive_id, path))
        return FileEntry(
            name,
            kind,
            path,
            _size(item.get("size")) if kind == "file" else None,
            _timestamp(item.get("modifiedTime")),
            item_id,
            mime_type,
        )

    async def _by_id(self, item_id: str) -> _DriveFolder | FileEntry:
        known = self._folders.get(item_id)
        if known is not None:
            return known
        url = self._api.url(
            f"/drive/v3/files/{quote(item_id, safe='')}",
            {"fields": f"{_DRIVE_ITEM_FIELDS},driveId", "supportsAllDrives": "true"},
        )
        item = await self._api.call("GET", url, refusal=self._refusal)
        mime_type = _text(item, "mimeType")
        if mime_type == DRIVE_SHORTCUT:
            raise _not_found(f"{item_id} is a shortcut, which discovery does not follow")
        if mime_type == DRIVE_FOLDER:
            # Where it is, the ID alone says: its children are shown under the ID.
            return _DriveFolder(item_id, _text(item, "driveId"), item_id)
        return self._entry(_DriveFolder(item_id, None, ""), item)

    async def _child(self, folder: _DriveFolder, name: str) -> _DriveFolder | FileEntry:
        query = self._query(folder) | {
            "q": f"{_drive_literal(folder.id)} in parents and name = {_drive_literal(name)} "
            f"and trashed = false and {_NOT_A_SHORTCUT}",
            "pageSize": "2",
            "fields": f"files({_DRIVE_ITEM_FIELDS})",
        }
        answer = await self._api.call(
            "GET", self._api.url("/drive/v3/files", query), refusal=self._refusal
        )
        found = _only(
            _objects(answer.get("files"), "files.list", self._api),
            f"{folder.path} holds nothing named {name!r}",
            f"{folder.path} holds more than one item named {name!r}",
        )
        entry = self._entry(folder, found)
        if entry.kind == "file":
            return entry
        return _DriveFolder(entry.ref, folder.drive_id, entry.path)

    async def _children(self, folder: _DriveFolder, token: str | None) -> FilePage:
        query = self._query(folder) | {
            "q": f"{_drive_literal(folder.id)} in parents and trashed = false "
            f"and {_NOT_A_SHORTCUT}",
            "pageSize": str(_DRIVE_PAGE_SIZE),
            "fields": f"nextPageToken,files({_DRIVE_ITEM_FIELDS})",
        }
        if token is not None:
            query["pageToken"] = token
        answer = await self._api.call(
            "GET", self._api.url("/drive/v3/files", query), refusal=self._refusal
        )
        items = _objects(answer.get("files"), "files.list", self._api)
        return FilePage(
            _sorted([self._entry(folder, item) for item in items]),
            _next_token(answer.get("nextPageToken"), self._api, "files.list"),
        )

    async def _shared_drives(self, token: str | None) -> FilePage:
        query = {
            "pageSize": str(_SHARED_DRIVES_PAGE_SIZE),
            "fields": "nextPageToken,drives(id,name)",
        }
        if token is not None:
            query["pageToken"] = token
        answer = await self._api.call(
            "GET", self._api.url("/drive/v3/drives", query), refusal=self._refusal
        )
        entries = []
        for item in _objects(answer.get("drives"), "drives.list", self._api):
            drive_id = _item_id(item, "id", self._api)
            name, path = _placed(f"/{SHARED_DRIVES}", _text(item, "name") or "", drive_id)
            # a shared drive's ID is also the ID of its top folder
            self._folders.remember(drive_id, _DriveFolder(drive_id, drive_id, path))
            entries.append(FileEntry(name, "directory", path, id=drive_id))
        return FilePage(
            _sorted(entries), _next_token(answer.get("nextPageToken"), self._api, "drives.list")
        )

    async def _shared_drive(self, name: str) -> _DriveFolder:
        query = {"q": f"name = {_drive_literal(name)}", "pageSize": "2", "fields": "drives(id)"}
        answer = await self._api.call(
            "GET", self._api.url("/drive/v3/drives", query), refusal=self._refusal
        )
        found = _only(
            _objects(answer.get("drives"), "drives.list", self._api),
            f"no shared drive named {name!r}",
            f"more than one shared drive is named {name!r}",
        )
        drive_id = _item_id(found, "id", self._api)
        return _DriveFolder(drive_id, drive_id, f"/{SHARED_DRIVES}/{name}")


# ----- Microsoft Graph -------------------------------------------------------------

_GRAPH_SELECT = "id,name,size,lastModifiedDateTime,file,folder"
# The documented default page of a folder's children.
_GRAPH_PAGE_SIZE = 200


class GraphDriveBrowser:
    """The default document library of a SharePoint site: paths from its root folder,
    or starting with a driveItem ID."""

    def __init__(self, api: _Api, site: str) -> None:
        self._api = api
        self._drive = f"/v1.0/sites/{quote(site, safe='')}/drive"
        self._prefix = str(api.exchange.base).rstrip("/")
        self._refusal = _bad_request(api)
        self._folders: _Places[str] = _Places()  # folder ID -> its path as shown

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        token = _given_token(page_token)
        parts = _segments(path)
        anchor = parts[0] if parts and not path.startswith("/") else None
        names = parts[1:] if anchor is not None else parts
        shown = self._shown(anchor, names)
        if token is not None:
            return await self._page(self._next_url(token), shown)
        if anchor is None and not names:
            return await self._page(self._children_url(None), shown)
        if anchor is not None and not names and self._folders.get(anchor) is not None:
            return await self._page(self._children_url(anchor), shown)
        item = await self._api.call("GET", self._item_url(anchor, names), refusal=self._refusal)
        if "folder" not in item:
            return FilePage((replace(self._entry("", item), path=path),))
        item_id = _item_id(item, "id", self._api)
        self._folders.remember(item_id, shown)
        return await self._page(self._children_url(item_id), shown)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)

    def _shown(self, anchor: str | None, names: Sequence[str]) -> str:
        """A folder's path as shown: from the root, or from an ID (where this session
        learnt that folder's path, from there)."""
        start = "" if anchor is None else self._folders.get(anchor) or anchor
        return "/".join([start, *names]) or "/"

    def _item_url(self, anchor: str | None, names: Sequence[str]) -> URL:
        if anchor is None:
            path = f"{self._drive}/root:/{_quoted(names)}"
        elif names:
            path = f"{self._drive}/items/{quote(anchor, safe='')}:/{_quoted(names)}"
        else:
            path = f"{self._drive}/items/{quote(anchor, safe='')}"
        return self._api.url(path, {"$select": _GRAPH_SELECT})

    def _children_url(self, item_id: str | None) -> URL:
        """The first page of a folder's children; None: the root folder's."""
        folder = "root" if item_id is None else f"items/{quote(item_id, safe='')}"
        return self._api.url(
            f"{self._drive}/{folder}/children",
            {"$top": str(_GRAPH_PAGE_SIZE), "$select": _GRAPH_SELECT},
        )

    async def _page(self, url: URL, shown: str) -> FilePage:
        answer = await self._api.call("GET", url, refusal=self._refusal)
        items = _objects(answer.get("value"), "children", self._api)
        entries = [self._entry(shown, item) for item in items]
        return FilePage(_sorted(entries), self._link_token(answer.get("@odata.nextLink")))

    def _entry(self, parent: str, item: Mapping[str, object]) -> FileEntry:
        """An item of the folder shown as ``parent``; a folder is remembered."""
        item_id = _item_id(item, "id", self._api)
        name, path = _placed(parent, _text(item, "name") or "", item_id)
        if "folder" in item:
            self._folders.remember(item_id, path)
            return FileEntry(
                name, "directory", path, None, _timestamp(item.get("lastModifiedDateTime")), item_id
            )
        facet = item.get("file")
        return FileEntry(
            name,
            "file",
            path,
            _size(item.get("size")),
            _timestamp(item.get("lastModifiedDateTime")),
            item_id,
            _text(facet, "mimeType") if isinstance(facet, dict) else None,
        )

    def _link_token(self, link: object) -> str | None:
        """@odata.nextLink as a page token: its path and query below the base URL, so
        that a token can never send the credentials anywhere else."""
        if link is None:
            return None
        if not isinstance(link, str) or not link.startswith(f"{self._prefix}/v1.0/"):
            raise self._api.fail(
                Reason.PROTOCOL_ERROR, "the next page's link is not on the Graph endpoint in use"
            )
        token = base64.urlsafe_b64encode(link[len(self._prefix) :].encode()).decode()
        return _next_token(token.rstrip("="), self._api, "children")

    def _next_url(self, token: str) -> URL:
        try:
            below = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            if not below.startswith("/v1.0/") or not _VISIBLE_ASCII.fullmatch(below):
                raise ValueError(below)
            return URL(self._prefix + below, encoded=True)
        except (binascii.Error, ValueError):
            raise _config_invalid("the page token is not valid") from None


# ----- Dropbox ---------------------------------------------------------------------

# Dropbox takes 1 to 2,000; the number is approximate.
_DROPBOX_PAGE_SIZE = 1000


class _NotAFolder(Exception):
    """list_folder was asked for a file."""


class DropboxBrowser:
    """A Dropbox account from its root: paths as Dropbox writes them (``/Reports/q1.csv``,
    matched without regard to case), or a file or folder ID (``id:…``)."""

    def __init__(self, api: _Api) -> None:
        self._api = api

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        token = _given_token(page_token)
        refusal = self._refusal(path)
        if token is not None:
            url = self._api.url("/2/files/list_folder/continue")
            return self._page(
                await self._api.call("POST", url, body={"cursor": token}, refusal=refusal)
            )
        target = self._target(path)
        try:
            answer = await self._api.call(
                "POST",
                self._api.url("/2/files/list_folder"),
                body={"path": target, "limit": _DROPBOX_PAGE_SIZE},
                refusal=refusal,
            )
        except _NotAFolder:
            item = await self._api.call(
                "POST",
                self._api.url("/2/files/get_metadata"),
                body={"path": target},
                refusal=refusal,
            )
            entry = self._entry(item)
            if entry is None:
                raise _not_found(f"nothing exists at {path}") from None
            return FilePage((replace(entry, path=path),))
        return self._page(answer)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)

    def _target(self, path: str) -> str:
        """The path as Dropbox takes it: "" for the root, /a/b, or id:…"""
        parts = _segments(path)
        if path.startswith("id:"):
            if len(parts) != 1:
                raise _config_invalid(f"{path}: an id:… path names one item; nothing may follow it")
            return path
        return "".join(f"/{part}" for part in parts)

    def _entry(self, item: Mapping[str, object]) -> FileEntry | None:
        """A file or folder; None for what list_folder may also report (deleted items)."""
        tag = item.get(".tag")
        if tag not in ("file", "folder"):
            return None
        item_id = _item_id(item, "id", self._api)
        shown = _cut(_text(item, "name") or "")
        # path_display is absent for an item not mounted in the account
        path = _text(item, "path_display")
        if path is None or len(path) > MAX_PATH_LENGTH:
            path = item_id
        if tag == "folder":
            return FileEntry(shown, "directory", path, id=item_id)
        return FileEntry(
            shown,
            "file",
            path,
            _size(item.get("size")),
            _timestamp(item.get("server_modified")),
            item_id,
        )

    def _page(self, answer: Mapping[str, object]) -> FilePage:
        items = _objects(answer.get("entries"), "list_folder", self._api)
        entries = [entry for item in items if (entry := self._entry(item)) is not None]
        token = _next_token(answer.get("cursor"), self._api, "list_folder")
        return FilePage(_sorted(entries), token if answer.get("has_more") is True else None)

    def _refusal(self, path: str) -> Refusal:
        """Dropbox's endpoint errors (409, a tagged union in the body) and its 400s."""

        def refusal(answer: HttpAnswer) -> Exception | None:
            if answer.status == 400:
                return self._api.refused_request(answer, answer.snippet)
            if answer.status != 409:
                return None
            document = answer.document if isinstance(answer.document, dict) else {}
            error = document.get("error")
            error = error if isinstance(error, dict) else {}
            lookup = error.get("path")
            tag = error.get(".tag")
            if tag == "path" and isinstance(lookup, dict):
                tag = f"path/{lookup.get('.tag')}"
            if tag == "path/not_folder":
                return _NotAFolder()
            if tag == "path/not_found":
                return self._api.fail(Reason.RESOURCE_NOT_FOUND, f"nothing exists at {path}")
            if tag == "path/malformed_path":
                return self._api.fail(Reason.CONFIG_INVALID, f"{path} is not a valid Dropbox path")
            if tag == "path/restricted_content":
                return self._api.fail(
                    Reason.PERMISSION_DENIED, f"{path}: Dropbox restricts this content"
                )
            if tag == "reset":
                return self._api.fail(
                    Reason.CONFIG_INVALID,
                    "the page token has expired: list the folder again without it",
                )
            summary = document.get("error_summary")
            said = printable(summary, 200) if isinstance(summary, str) else "no error_summary"
            return self._api.fail(Reason.PROVIDER_ERROR, f"{answer.label}: HTTP 409, {said}")

        return refusal


# ----- Gmail -----------------------------------------------------------------------

_GMAIL = "/gmail/v1/users/me"
_MESSAGES_PAGE_SIZE = 500  # messages.list's largest page
# labels.list answers every label at once (a mailbox has at most 10,000 of its own);
# the root serves them in pages of this many.
_LABELS_PAGE_SIZE = 1000
MAX_LABELS = 11_000
# How deep into a message's MIME parts attachments are looked for.
_PART_DEPTH = 6
SEARCH_FOLDER = "q:"
MAX_SEARCH_LENGTH = 2048
_PART_ID = re.compile(r"[0-9]{1,10}(\.[0-9]{1,10}){0,15}")
_WITH_ATTACHMENTS = "has:attachment"


def _part_fields(depth: int) -> str:
    """The fields of a MIME part, and of its parts ``depth`` levels down: no body data."""
    own = "partId,mimeType,filename,body(size)"
    return own if depth == 0 else f"{own},parts({_part_fields(depth - 1)})"


_MESSAGE_FIELDS = f"id,internalDate,payload({_part_fields(_PART_DEPTH)})"


class GmailAttachmentBrowser:
    """A mailbox's attachments as files: the root lists the labels, a label (or a search,
    ``/q:…``) the messages with attachments, a message its attachments."""

    def __init__(self, api: _Api) -> None:
        self._api = api
        self._refusal = _bad_request(api)
        self._labels: dict[str, str] | None = None  # ID -> name, read once a session
        self._messages: _Places[str] = _Places()  # message ID -> its path as shown

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        token = _given_token(page_token)
        parts = _segments(path)
        if not parts:
            return await self._label_page(token)
        if path.startswith("/"):
            folder = parts[0]
            search = await self._search(folder)
            if len(parts) == 1:
                return await self._message_page(f"/{folder}", search, token)
            message_id, rest = parts[1], parts[2:]
            shown = f"/{folder}/{message_id}"
        else:
            message_id, rest = parts[0], parts[1:]
            if not rest and message_id in await self._label_names():
                search = {"labelIds": message_id, "q": _WITH_ATTACHMENTS}
                return await self._message_page(f"/{message_id}", search, token)
            shown = self._messages.get(message_id) or message_id
        if len(rest) > 1:
            raise _not_found(f"nothing exists at {path}: an attachment holds nothing")
        attachments = await self._attachments(message_id, shown)
        if not rest:
            return FilePage(attachments)
        wanted = f"{message_id}/{rest[0]}"
        for attachment in attachments:
            if attachment.id == wanted:
                return FilePage((replace(attachment, path=path),))
        raise _not_found(f"message {message_id} has no attachment {rest[0]}")

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)

    async def _label_names(self) -> dict[str, str]:
        if self._labels is None:
            answer = await self._api.call(
                "GET", self._api.url(f"{_GMAIL}/labels"), refusal=self._refusal
            )
            labels = _objects(answer.get("labels"), "labels.list", self._api, MAX_LABELS)
            self._labels = {
                _item_id(label, "id", self._api): _text(label, "name") or "" for label in labels
            }
        return self._labels

    async def _label_page(self, token: str | None) -> FilePage:
        if token is not None and not token.isdigit():
            raise _config_invalid("the page token is not valid")
        start = int(token or 0)
        labels = sorted((await self._label_names()).items(), key=lambda label: label[1])
        page = labels[start : start + _LABELS_PAGE_SIZE]
        entries = tuple(
            FileEntry(_cut(name), "directory", f"/{label_id}", id=label_id)
            for label_id, name in page
        )
        more = start + _LABELS_PAGE_SIZE < len(labels)
        return FilePage(entries, str(start + _LABELS_PAGE_SIZE) if more else None)

    async def _search(self, folder: str) -> dict[str, str]:
        """messages.list's parameters for a folder: a label's ID or name, or q:SEARCH
        (percent-encoded, so that it may hold a slash)."""
        if folder.startswith(SEARCH_FOLDER):
            search = unquote(folder[len(SEARCH_FOLDER) :])
            if not search.strip():
                raise _config_invalid("a q: folder needs a search, e.g. /q:from:billing")
            if len(search) > MAX_SEARCH_LENGTH:
                raise _config_invalid(f"the search is longer than {MAX_SEARCH_LENGTH} characters")
            return {"q": f"({search}) {_WITH_ATTACHMENTS}"}
        labels = await self._label_names()
        if folder not in labels:
            named = [label_id for label_id, name in labels.items() if name == folder]
            if len(named) > 1:
                raise _config_invalid(f"more than one label is named {folder!r}: give its ID")
            if not named:
                raise _not_found(f"no label {folder!r}: the root lists the labels")
            folder = named[0]
        return {"labelIds": folder, "q": _WITH_ATTACHMENTS}

    async def _message_page(
        self, shown: str, search: Mapping[str, str], token: str | None
    ) -> FilePage:
        query = {**search, "maxResults": str(_MESSAGES_PAGE_SIZE)}
        if token is not None:
            query["pageToken"] = token
        answer = await self._api.call(
            "GET", self._api.url(f"{_GMAIL}/messages", query), refusal=self._refusal
        )
        entries = []
        for message in _objects(answer.get("messages"), "messages.list", self._api):
            message_id = _item_id(message, "id", self._api)
            path = f"{shown}/{message_id}"
            self._messages.remember(message_id, path)
            entries.append(FileEntry(message_id, "directory", path, id=message_id))
        # newest first, as Gmail lists them
        return FilePage(
            tuple(entries), _next_token(answer.get("nextPageToken"), self._api, "messages.list")
        )

    async def _attachments(self, message_id: str, shown: str) -> tuple[FileEntry, ...]:
        """The parts of a message that have a file name, in the message's order."""
        if not _usable_id(message_id):
            raise _config_invalid(f"{message_id!r} is not a message ID")
        url = self._api.url(
            f"{_GMAIL}/messages/{quote(message_id, safe='')}",
            {"format": "full", "fields": _MESSAGE_FIELDS},
        )
        message = await self._api.call("GET", url, refusal=self._refusal)
        received = _epoch_ms(message.get("internalDate"))
        found: list[FileEntry] = []

        def visit(part: object, depth: int) -> None:
            if not isinstance(part, dict) or len(found) >= MAX_PAGE_ENTRIES:
                return
            name, part_id = _text(part, "filename"), _text(part, "partId")
            if name is not None and part_id is not None and _PART_ID.fullmatch(part_id):
                body = part.get("body")
                found.append(
                    FileEntry(
                        _cut(name),
                        "file",
                        f"{shown}/{part_id}",
                        _size(body.get("size")) if isinstance(body, dict) else None,
                        received,
                        # the attachmentId changes from one read to the next; the part's
                        # place in the message does not
                        f"{message_id}/{part_id}",
                        _text(part, "mimeType"),
                    )
                )
            children = part.get("parts")
            if depth < _PART_DEPTH and isinstance(children, list):
                for child in children:
                    visit(child, depth + 1)

        visit(message.get("payload"), 0)
        return tuple(found)


def _epoch_ms(value: object) -> datetime.datetime | None:
    """Gmail's internalDate: milliseconds since the epoch, as decimal text."""
    millis = _size(value)
    if millis is None or millis > 10**14:
        return None
    return datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC)


# ----- the entry point -------------------------------------------------------------

_BROWSERS: Mapping[FileApi, Callable[[_Api, VerifyRequest], FileBrowser]] = {
    "googleDrive": lambda api, request: GoogleDriveBrowser(api),
    "msGraphDrive": lambda api, request: GraphDriveBrowser(
        api, config_text(request, "site", "root")
    ),
    "dropbox": lambda api, request: DropboxBrowser(api),
    "gmailAttachments": lambda api, request: GmailAttachmentBrowser(api),
}


@asynccontextmanager
async def browse_saas_files(
    api: FileApi, request: VerifyRequest, egress: Egress, budget: RequestBudget
) -> AsyncIterator[FileBrowser]:
    """Log in as a verification does (the OAuth 2.0 grant first) and yield the browser of
    the provider's list API; every request spends from ``budget`` first."""
    async with http_session(request, egress, before_request=budget.spend) as exchange:
        if exchange.grant is not None:
            await exchange.authorize(exchange.grant)
        yield _BROWSERS[api](_Api(exchange), request)
