"""Local stand-ins for the list APIs that discovery's SaaS file browsers use.

Google Drive, Microsoft Graph (a SharePoint site's document library), Dropbox and Gmail
each run as a real aiohttp server on 127.0.0.1 that answers the documented requests as
its vendor documents them (404 elsewhere), pages as the vendor does, and gives the
documented error answers. What each vendor documents, where, and when it was checked is
in ``file_api_facts/<api>.yaml`` next to this module: the sources, the facts the server
follows, and each error answer with the page it comes from (or what about it is assumed).

The servers hold one tree of folders and files (``tree``), shown by each API its own way;
Gmail holds labels and messages (``MAILBOX``). They page in pages smaller than asked for
(``SERVER_PAGE``), which every vendor allows ("partial or empty result pages are
possible", "a page of results may contain zero or more results", an approximate limit,
a maximum), so that a small tree has several pages. An OAuth 2.0 token endpoint of each
vendor's kind issues the access tokens the APIs accept.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import queue
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict
from pydantic import Field, model_validator

from http_server import serve_app
from patchbay.api.connector import FileApi
from saas_contracts import Documented, Facts, Reply

FACTS_DIR = Path(__file__).parent / "file_api_facts"
LOOPBACK = "127.0.0.1"
CLIENT_ID = "client-1"
CLIENT_SECRET = "client-secret-1"
REFRESH_TOKEN = "rt-files-1"
# Entries a page holds at most, whatever the request asks for.
SERVER_PAGE = 3
# The catalogue entry of each file API.
ENTRIES: Mapping[FileApi, str] = {
    "googleDrive": "google-drive",
    "msGraphDrive": "msft-sharepoint",
    "dropbox": "dropbox",
    "gmailAttachments": "gmail-inbox",
}
SITE = "contoso.sharepoint.com,2c712604-1370-44e7-a1f5-426573fda80a,2d2244c3-251a-49ea"
TENANT = "contoso.onmicrosoft.com"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DocumentedReply(Reply, Documented):
    """An answer a vendor documents: status, body (a string goes as text/plain), headers."""

    def response(self, **fill: str) -> web.Response:
        """The answer, with {name} in its body's text filled from ``fill``."""
        headers: CIMultiDict[str] = CIMultiDict(self.headers)
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return web.Response(status=self.status, text=self.body, headers=headers)
        text = json.dumps(self.body)
        for key, value in fill.items():
            text = text.replace("{" + key + "}", value)
        headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        return web.Response(status=self.status, text=text, headers=headers)


class FileApiFacts(Facts):
    checked: datetime.date
    sources: list[str] = Field(min_length=1)
    facts: list[str] = Field(min_length=1)
    answers: dict[str, DocumentedReply]

    @model_validator(mode="after")
    def _answers_cite_the_sources(self) -> FileApiFacts:
        for name, answer in self.answers.items():
            if answer.source is not None and answer.source not in self.sources:
                raise ValueError(f"{name}: {answer.source} is not among the sources")
        return self


def load_facts(api: FileApi) -> FileApiFacts:
    return FileApiFacts.model_validate(yaml.safe_load((FACTS_DIR / f"{api}.yaml").read_text()))


# ----- what the servers hold -------------------------------------------------------

MODIFIED = "2026-11-02T10:15:30Z"


@dataclass
class Item:
    """A file (``size`` set) or a folder (``children``)."""

    id: str
    name: str
    size: int | None = None
    children: list[Item] = field(default_factory=list)
    mime_type: str = "text/csv"
    trashed: bool = False
    shortcut: bool = False

    @property
    def is_folder(self) -> bool:
        return self.size is None and not self.shortcut

    def walk(self, path: str = "") -> Iterator[tuple[str, Item]]:
        """Every item below this one with its path."""
        for child in self.children:
            child_path = f"{path}/{child.name}"
            yield child_path, child
            yield from child.walk(child_path)


def _file(item_id: str, name: str, size: int, mime_type: str = "text/csv") -> Item:
    return Item(item_id, name, size, mime_type=mime_type)


def tree(*, drive_extras: bool = False) -> Item:
    """The tree every file server holds: a readme, /incoming (two levels), /many (more
    entries than a page). With drive_extras, what only Drive can hold: a trashed file, a
    shortcut, and two files of one name."""
    root = Item(
        "0AROOT",
        "",
        children=[
            _file("F-readme", "readme.txt", 6, "text/plain"),
            Item(
                "D-incoming",
                "incoming",
                children=[
                    _file("F-orders", "orders.csv", 5),
                    Item(
                        "D-2024",
                        "2024",
                        children=[_file("F-jan", "jan.csv", 3), _file("F-feb", "feb.csv", 4)],
                    ),
                ],
            ),
            Item("D-many", "many", children=[_file(f"F-m{n}", f"f{n}", 1) for n in range(7)]),
        ],
    )
    if drive_extras:
        root.children += [
            Item("F-old", "old.txt", 9, trashed=True),
            Item("S-link", "link", shortcut=True),
            Item(
                "D-twins", "twins", children=[_file("F-a1", "a.txt", 1), _file("F-a2", "a.txt", 2)]
            ),
        ]
    return root


# What the tree holds under /incoming, and the readme.
INCOMING_BYTES = 5 + 3 + 4
README_BYTES = 6
MANY = 7


def shared_drive() -> Item:
    """A shared drive: its ID is also its top folder's."""
    return Item("0ATEAM", "Team", children=[_file("F-plans", "plans.txt", 8, "text/plain")])


@dataclass(frozen=True)
class Part:
    part_id: str
    mime_type: str
    filename: str = ""
    size: int = 0
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Message:
    id: str
    labels: tuple[str, ...]
    sender: str
    internal_date: str  # epoch milliseconds
    payload: Part


def _mail(message_id: str, labels: tuple[str, ...], sender: str, *attached: Part) -> Message:
    body = Part("0", "text/plain", size=40)
    return Message(
        message_id,
        labels,
        sender,
        "1764405330000",
        Part("", "multipart/mixed", parts=(body, *attached)),
    )


LABELS = {"INBOX": "INBOX", "SENT": "SENT", "Label_1": "Invoices", "Label_2": "Travel/2026"}
MAILBOX = (
    _mail(
        "18c2f0a1b2c3d4e5",
        ("INBOX", "Label_1"),
        "billing@example.com",
        Part("1", "application/pdf", "invoice-11.pdf", 1200),
        # an image inside a forwarded message: two levels down
        Part(
            "2",
            "message/rfc822",
            parts=(
                Part(
                    "2.0", "multipart/mixed", parts=(Part("2.0.1", "image/png", "logo.png", 300),)
                ),
            ),
        ),
    ),
    _mail("18c2f0a1b2c3d4e6", ("INBOX",), "friend@example.com"),  # no attachment
    _mail(
        "18c2f0a1b2c3d4e7",
        ("Label_1",),
        "billing@example.com",
        Part("1", "text/csv", "invoice-12.csv", 80),
    ),
    *(
        _mail(
            f"18c2f0a1b2c3d5{n:02x}",
            ("INBOX",),
            "news@example.com",
            Part("1", "text/plain", "n.txt", 10),
        )
        for n in range(5)
    ),
)


# ----- the servers -----------------------------------------------------------------


@dataclass
class FileApiServer:
    """A running stand-in; ``origin`` is its http://127.0.0.1:port."""

    api: FileApi
    facts: FileApiFacts
    origin: str = ""
    # every request, as "METHOD /path"
    seen: list[str] = field(default_factory=list)
    # answer every API request (not the token request) with this documented answer
    answer_with: str | None = None
    issued: set[str] = field(default_factory=set)

    @web.middleware
    async def record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        return await handler(request)

    def routes(self, app: web.Application) -> None:
        """Add the vendor's token endpoint and API routes."""
        raise NotImplementedError

    def api_requests(self) -> list[str]:
        return [seen for seen in self.seen if not seen.endswith("/token")]

    def answer(self, name: str, **fill: str) -> web.Response:
        return self.facts.answers[name].response(**fill)

    def refused(self, request: web.Request, unauthenticated: str) -> web.Response | None:
        """The documented answer for a request without an issued access token, or the one
        a test asked for; None lets the request through."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.issued:
            return self.answer(unauthenticated)
        if self.answer_with is not None:
            return self.answer(self.answer_with)
        return None

    async def token(self, request: web.Request) -> web.StreamResponse:
        """An OAuth 2.0 token endpoint: the refresh grant, or (Graph) client credentials
        with the Graph endpoint's .default scope; client id and secret in the form."""
        form = await request.post()
        grant = "client_credentials" if self.api == "msGraphDrive" else "refresh_token"
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != grant:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if grant == "refresh_token" and form.get("refresh_token") != REFRESH_TOKEN:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if grant == "client_credentials" and form.get("scope") != f"{self.origin}/.default":
            return web.json_response({"error": "invalid_scope"}, status=400)
        access_token = f"at-{secrets.token_hex(12)}"
        self.issued.add(access_token)
        return web.json_response(
            {"access_token": access_token, "token_type": "Bearer", "expires_in": 3599}
        )


def _page(items: Sequence[Any], start: int, asked: int) -> tuple[list[Any], int | None]:
    """At most SERVER_PAGE (or fewer, when asked) items from ``start``, and where the next
    page starts."""
    size = min(asked, SERVER_PAGE)
    page = list(items[start : start + size])
    return page, start + size if start + size < len(items) else None


def _token(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def _untoken(token: str) -> list[Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _int(text: str | None, default: int) -> int | None:
    if text is None:
        return default
    return int(text) if text.isdigit() else None


# ----- Google Drive ----------------------------------------------------------------

DRIVE_FOLDER = "application/vnd.google-apps.folder"
DRIVE_SHORTCUT = "application/vnd.google-apps.shortcut"
_DRIVE_STRING = r"'((?:[^'\\]|\\.)*)'"
_DRIVE_CLAUSES = {
    "parent": re.compile(rf"{_DRIVE_STRING} in parents"),
    "name": re.compile(rf"name = {_DRIVE_STRING}"),
    "trashed": re.compile(r"trashed = false"),
    "mime": re.compile(rf"mimeType != {_DRIVE_STRING}"),
}


def _drive_unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _fields(selector: str | None, collection: str) -> set[str] | None:
    """The item fields a ``fields`` selector such as nextPageToken,files(id,name) keeps;
    None: all of them."""
    if selector is None:
        return None
    match = re.search(rf"{collection}\(([^)]*)\)", selector)
    return set(match.group(1).split(",")) if match else set()


class DriveServer(FileApiServer):
    def __init__(self, facts: FileApiFacts) -> None:
        super().__init__("googleDrive", facts)
        self.root = tree(drive_extras=True)
        self.team = shared_drive()
        # item ID -> (item, its parent's ID, its shared drive's ID)
        self.items: dict[str, tuple[Item, str, str | None]] = {}
        for top, drive_id in ((self.root, None), (self.team, self.team.id)):
            self._index(top, drive_id)

    def _index(self, folder: Item, drive_id: str | None) -> None:
        for child in folder.children:
            self.items[child.id] = (child, folder.id, drive_id)
            self._index(child, drive_id)

    def resource(self, item: Item, drive_id: str | None, fields: set[str] | None) -> dict[str, Any]:
        mime_type = (
            DRIVE_FOLDER if item.is_folder else DRIVE_SHORTCUT if item.shortcut else item.mime_type
        )
        full: dict[str, Any] = {
            "kind": "drive#file",
            "id": item.id,
            "name": item.name,
            "mimeType": mime_type,
            "modifiedTime": "2026-11-02T10:15:30.123Z",
        }
        if item.size is not None:
            full["size"] = str(item.size)  # int64 as a string
        if drive_id is not None:
            full["driveId"] = drive_id
        return full if fields is None else {k: v for k, v in full.items() if k in fields}

    async def files(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        query = request.query
        size = _int(query.get("pageSize"), 100)
        if size is None or not 1 <= size <= 1000:
            return self.answer("badRequest")
        clauses = [c.strip() for c in query.get("q", "").split(" and ")]
        parent = name = None
        trashed_too, shortcuts_too = True, True
        for clause in clauses:
            if (found := _DRIVE_CLAUSES["parent"].fullmatch(clause)) is not None:
                parent = _drive_unescape(found.group(1))
            elif (found := _DRIVE_CLAUSES["name"].fullmatch(clause)) is not None:
                name = _drive_unescape(found.group(1))
            elif _DRIVE_CLAUSES["trashed"].fullmatch(clause):
                trashed_too = False
            elif (found := _DRIVE_CLAUSES["mime"].fullmatch(clause)) and found.group(
                1
            ) == DRIVE_SHORTCUT:
                shortcuts_too = False
            else:
                return self.answer("badRequest")
        if parent is None:
            return self.answer("badRequest")
        folder_id = self.root.id if parent == "root" else parent
        children = self._children(folder_id, query)
        chosen = [
            (item, drive_id)
            for item, drive_id in children
            if (name is None or item.name == name)
            and (trashed_too or not item.trashed)
            and (shortcuts_too or not item.shortcut)
        ]
        start = 0
        if "pageToken" in query:
            token = _untoken(query["pageToken"])
            if token is None or token[:2] != ["files", query.get("q")]:
                return self.answer("invalidPageToken")
            start = int(token[2])
        page, following = _page(chosen, start, size)
        selector = query.get("fields")
        answer: dict[str, Any] = {
            "files": [
                self.resource(item, drive_id, _fields(selector, "files")) for item, drive_id in page
            ]
        }
        if following is not None and (selector is None or "nextPageToken" in selector):
            answer["nextPageToken"] = _token("files", query.get("q"), following)
        return web.json_response(answer)

    def _children(self, folder_id: str, query: Mapping[str, str]) -> list[tuple[Item, str | None]]:
        """A folder's children, as files.list lets them through: items of a shared drive
        only with includeItemsFromAllDrives and supportsAllDrives, and (since the user
        corpus leaves out shared drive files the user never opened) with corpora=drive and
        that drive's driveId."""
        if folder_id == self.root.id:
            return [(child, None) for child in self.root.children]
        drive_id: str | None
        if folder_id == self.team.id:
            folder, drive_id = self.team, self.team.id
        elif folder_id in self.items:
            folder, _, drive_id = self.items[folder_id]
        else:
            return []
        if drive_id is not None and not (
            query.get("includeItemsFromAllDrives") == "true"
            and query.get("supportsAllDrives") == "true"
            and query.get("corpora") == "drive"
            and query.get("driveId") == drive_id
        ):
            return []
        return [(child, drive_id) for child in folder.children]

    async def file(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        file_id = request.match_info["fileId"]
        fields = set(request.query.get("fields", "id,name,mimeType").split(","))
        if file_id == "root":
            return web.json_response(self.resource(self.root, None, fields) | {"name": "My Drive"})
        if file_id == self.team.id and request.query.get("supportsAllDrives") == "true":
            return web.json_response(self.resource(self.team, self.team.id, fields))
        found = self.items.get(file_id)
        if found is None or (
            found[2] is not None and request.query.get("supportsAllDrives") != "true"
        ):
            return self.answer("notFound", fileId=file_id)
        return web.json_response(self.resource(found[0], found[2], fields))

    async def drives(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        query = request.query
        size = _int(query.get("pageSize"), 10)
        if size is None or not 1 <= size <= 100:
            return self.answer("badRequest")
        drives = [self.team, Item("0AOTHER", "Archive")]
        if "q" in query:
            found = _DRIVE_CLAUSES["name"].fullmatch(query["q"])
            if found is None:
                return self.answer("badRequest")
            drives = [d for d in drives if d.name == _drive_unescape(found.group(1))]
        start = 0
        if "pageToken" in query:
            token = _untoken(query["pageToken"])
            if token is None or token[0] != "drives":
                return self.answer("invalidPageToken")
            start = int(token[1])
        page, following = _page(drives, start, min(size, 1))
        answer: dict[str, Any] = {
            "kind": "drive#driveList",
            "drives": [{"kind": "drive#drive", "id": d.id, "name": d.name} for d in page],
        }
        if following is not None:
            answer["nextPageToken"] = _token("drives", following)
        return web.json_response(answer)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self.token)
        app.router.add_get("/drive/v3/files", self.files)
        app.router.add_get("/drive/v3/files/{fileId}", self.file)
        app.router.add_get("/drive/v3/drives", self.drives)


# ----- Microsoft Graph -------------------------------------------------------------


class GraphServer(FileApiServer):
    def __init__(self, facts: FileApiFacts) -> None:
        super().__init__("msGraphDrive", facts)
        self.root = tree()
        self.by_id = {item.id: item for _, item in self.root.walk()} | {self.root.id: self.root}

    def resource(self, item: Item, select: str | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": item.id,
            "name": item.name or "root",
            "lastModifiedDateTime": MODIFIED,
            "webUrl": f"https://contoso.sharepoint.com/Shared%20Documents/{item.name}",
        }
        if item.is_folder:
            full["folder"] = {"childCount": len(item.children)}
            full["size"] = 0
        else:
            full["file"] = {"mimeType": item.mime_type}
            full["size"] = item.size
        if select is None:
            return full
        keep = set(select.split(","))
        return {k: v for k, v in full.items() if k in keep}

    def _resolve(self, start: Item, path: str) -> Item | None:
        found: Item | None = start
        for name in [part for part in path.split("/") if part]:
            if found is None:
                return None
            found = next((c for c in found.children if c.name == name), None)
        return found

    async def drive(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        if request.match_info["site"] != SITE:
            return self.answer("notFound")
        rest = request.match_info["rest"]
        select = request.query.get("$select")
        listing = rest.endswith("/children")
        address = rest.removesuffix("/children")
        # root, root:/a/b, items/ID, items/ID:/a/b (a trailing colon allowed)
        match = re.fullmatch(r"(root|items/([^/:]+))(?::(/.*?):?)?", address)
        if match is None:
            return self.answer("invalidRequest")
        start = self.root if match.group(1) == "root" else self.by_id.get(match.group(2) or "")
        item = self._resolve(start, match.group(3) or "") if start is not None else None
        if item is None:
            return self.answer("notFound")
        if not listing:
            return web.json_response(self.resource(item, select))
        if not item.is_folder:
            return web.json_response({"value": []})
        top = _int(request.query.get("$top"), 200)
        if top is None or top < 1:
            return self.answer("invalidRequest")
        start_at = 0
        if "$skiptoken" in request.query:
            token = _untoken(request.query["$skiptoken"])
            if token is None or token[0] != item.id:
                return self.answer("invalidRequest")
            start_at = int(token[1])
        page, following = _page(item.children, start_at, top)
        answer: dict[str, Any] = {"value": [self.resource(child, select) for child in page]}
        if following is not None:
            # the whole URL of the next page, all the other parameters kept, as Graph
            # writes it: by the drive's own ID rather than the site's
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
            link = request.url.with_path(f"/v1.0/drives/b!contoso/items/{item.id}/children")
            answer["@odata.nextLink"] = str(
                link.with_query({**query, "$skiptoken": _token(item.id, following)})
            )
        return web.json_response(answer)

    async def drive_by_id(self, request: web.Request) -> web.StreamResponse:
        """The next page's link, as Graph gives it."""
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        item = self.by_id.get(request.match_info["id"])
        token = _untoken(request.query.get("$skiptoken", ""))
        if item is None or token is None or token[0] != item.id:
            return self.answer("invalidRequest")
        page, following = _page(
            item.children, int(token[1]), _int(request.query.get("$top"), 200) or 200
        )
        answer: dict[str, Any] = {
            "value": [self.resource(child, request.query.get("$select")) for child in page]
        }
        if following is not None:
            answer["@odata.nextLink"] = str(
                request.url.update_query({"$skiptoken": _token(item.id, following)})
            )
        return web.json_response(answer)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_get("/v1.0/sites/{site}/drive/{rest:.*}", self.drive)
        app.router.add_get("/v1.0/drives/b!contoso/items/{id}/children", self.drive_by_id)


# ----- Dropbox ---------------------------------------------------------------------

_DROPBOX_PATH = re.compile(r"(/(.|[\r\n])*)?|id:.*|(ns:[0-9]+(/(.|[\r\n])*)?)")


class DropboxServer(FileApiServer):
    def __init__(self, facts: FileApiFacts) -> None:
        super().__init__("dropbox", facts)
        self.root = tree()
        self.paths = {path.lower(): (path, item) for path, item in self.root.walk()}
        self.by_id = {f"id:{item.id}": (path, item) for path, item in self.root.walk()}
        self.cursors: dict[str, tuple[str, int]] = {}

    def metadata(self, path: str, item: Item) -> dict[str, Any]:
        common = {
            "name": item.name,
            "id": f"id:{item.id}",
            "path_lower": path.lower(),
            "path_display": path,
        }
        if item.is_folder:
            return {".tag": "folder", **common}
        return {
            ".tag": "file",
            **common,
            "client_modified": MODIFIED,
            "server_modified": MODIFIED,
            "rev": "a1c10ce0dd78",
            "size": item.size,
            "is_downloadable": True,
        }

    async def _arguments(self, request: web.Request) -> dict[str, Any] | web.Response:
        if (refused := self.refused(request, "expiredAccessToken")) is not None:
            return refused
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return self.answer("badRequest")
        try:
            arguments = json.loads(await request.read())
        except ValueError:
            return self.answer("badRequest")
        return arguments if isinstance(arguments, dict) else self.answer("badRequest")

    def _find(self, path: str) -> tuple[str, Item] | None:
        if path == "":
            return "", self.root
        if path.startswith("id:"):
            return self.by_id.get(path)
        return self.paths.get(path.lower())

    def _listing(self, path: str, item: Item, start: int, limit: int) -> web.Response:
        page, following = _page(item.children, start, limit)
        cursor = secrets.token_urlsafe(16)
        self.cursors[cursor] = (path, following or len(item.children))
        return web.json_response(
            {
                "entries": [self.metadata(f"{path}/{child.name}", child) for child in page],
                "cursor": cursor,
                "has_more": following is not None,
            }
        )

    async def list_folder(self, request: web.Request) -> web.StreamResponse:
        arguments = await self._arguments(request)
        if isinstance(arguments, web.Response):
            return arguments
        path, limit = arguments.get("path"), arguments.get("limit", 2000)
        if not isinstance(path, str) or not _DROPBOX_PATH.fullmatch(path):
            return self.answer("badRequest")
        if not isinstance(limit, int) or not 1 <= limit <= 2000:
            return self.answer("badRequest")
        found = self._find(path)
        if found is None:
            return self.answer("notFound")
        shown, item = found
        if not item.is_folder:
            return self.answer("notFolder")
        return self._listing(shown, item, 0, limit)

    async def list_folder_continue(self, request: web.Request) -> web.StreamResponse:
        arguments = await self._arguments(request)
        if isinstance(arguments, web.Response):
            return arguments
        state = self.cursors.get(str(arguments.get("cursor")))
        if state is None:
            return self.answer("reset")
        path, start = state
        found = self._find(path)
        assert found is not None
        return self._listing(path, found[1], start, 2000)

    async def get_metadata(self, request: web.Request) -> web.StreamResponse:
        arguments = await self._arguments(request)
        if isinstance(arguments, web.Response):
            return arguments
        path = arguments.get("path")
        if not isinstance(path, str) or path == "" or not _DROPBOX_PATH.fullmatch(path):
            return self.answer("badRequest")
        found = self._find(path)
        if found is None:
            return self.answer("notFound")
        return web.json_response(self.metadata(*found))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/oauth2/token", self.token)
        app.router.add_post("/2/files/list_folder", self.list_folder)
        app.router.add_post("/2/files/list_folder/continue", self.list_folder_continue)
        app.router.add_post("/2/files/get_metadata", self.get_metadata)


# ----- Gmail -----------------------------------------------------------------------

_GMAIL_TERM = re.compile(r"has:attachment|from:(\S+)")


class GmailServer(FileApiServer):
    def __init__(self, facts: FileApiFacts) -> None:
        super().__init__("gmailAttachments", facts)
        self.messages = {message.id: message for message in MAILBOX}

    async def labels(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        kinds = {label_id: "system" if label_id.isupper() else "user" for label_id in LABELS}
        return web.json_response(
            {"labels": [{"id": i, "name": n, "type": kinds[i]} for i, n in LABELS.items()]}
        )

    def _matches(self, message: Message, search: str) -> bool | None:
        """Whether a message matches a search of has:attachment and from: terms, grouped
        with parentheses; None for a search this stand-in cannot read."""
        terms = search.replace("(", " ").replace(")", " ").split()
        for term in terms:
            found = _GMAIL_TERM.fullmatch(term)
            if found is None:
                return None
            if term == "has:attachment" and not _attachments(message.payload):
                return False
            if found.group(1) and found.group(1) != message.sender:
                return False
        return True

    async def list_messages(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        query = request.query
        size = _int(query.get("maxResults"), 100)
        if size is None or not 1 <= size <= 500:
            return self.answer("invalidArgument")
        labels = query.getall("labelIds", [])
        if any(label not in LABELS for label in labels):
            return self.answer("invalidArgument")
        chosen = []
        for message in MAILBOX:
            matched = self._matches(message, query.get("q", ""))
            if matched is None:
                return self.answer("invalidArgument")
            if matched and all(label in message.labels for label in labels):
                chosen.append(message)
        start = 0
        if "pageToken" in query:
            token = _untoken(query["pageToken"])
            if token is None or token[:2] != [labels, query.get("q")]:
                return self.answer("invalidArgument")
            start = int(token[2])
        page, following = _page(chosen, start, size)
        answer: dict[str, Any] = {"resultSizeEstimate": len(chosen)}
        if page:
            answer["messages"] = [{"id": m.id, "threadId": m.id} for m in page]
        if following is not None:
            answer["nextPageToken"] = _token(labels, query.get("q"), following)
        return web.json_response(answer)

    def part(self, part: Part, data: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"size": part.size}
        if part.filename:
            # a new one at every read
            body["attachmentId"] = f"ANGjdJ{secrets.token_urlsafe(24)}"
        elif data and part.size:
            body["data"] = base64.urlsafe_b64encode(b"x" * part.size).decode()
        answer: dict[str, Any] = {
            "partId": part.part_id,
            "mimeType": part.mime_type,
            "filename": part.filename,
            "body": body,
        }
        if part.parts:
            answer["parts"] = [self.part(child, data) for child in part.parts]
        return answer

    async def message(self, request: web.Request) -> web.StreamResponse:
        if (refused := self.refused(request, "unauthenticated")) is not None:
            return refused
        message_id = request.match_info["id"]
        if not re.fullmatch(r"[0-9a-f]{16}", message_id):
            return self.answer("invalidArgument")
        message = self.messages.get(message_id)
        if message is None:
            return self.answer("notFound")
        # a fields selector without body data leaves the data out; the stand-in reads no
        # more of the selector than that
        data = "data" in request.query.get("fields", "data")
        return web.json_response(
            {
                "id": message.id,
                "threadId": message.id,
                "labelIds": list(message.labels),
                "internalDate": message.internal_date,
                "payload": self.part(message.payload, data),
            }
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self.token)
        app.router.add_get("/gmail/v1/users/me/labels", self.labels)
        app.router.add_get("/gmail/v1/users/me/messages", self.list_messages)
        app.router.add_get("/gmail/v1/users/me/messages/{id}", self.message)


def _attachments(part: Part) -> list[Part]:
    found = [part] if part.filename else []
    for child in part.parts:
        found += _attachments(child)
    return found


_SERVERS: Mapping[FileApi, Callable[[FileApiFacts], FileApiServer]] = {
    "googleDrive": DriveServer,
    "msGraphDrive": GraphServer,
    "dropbox": DropboxServer,
    "gmailAttachments": GmailServer,
}
# Where each API's token endpoint is on its stand-in.
TOKEN_PATHS: Mapping[FileApi, str] = {
    "googleDrive": "/token",
    "msGraphDrive": f"/{TENANT}/oauth2/v2.0/token",
    "dropbox": "/oauth2/token",
    "gmailAttachments": "/token",
}


@asynccontextmanager
async def serve_file_api(api: FileApi) -> AsyncIterator[FileApiServer]:
    """The API's stand-in on a free port of 127.0.0.1."""
    server = _SERVERS[api](load_facts(api))
    app = web.Application(middlewares=[server.record])
    server.routes(app)
    async with serve_app(app, host=LOOPBACK) as origin:
        server.origin = origin
        yield server


@contextmanager
def file_api_in_thread(api: FileApi) -> Iterator[FileApiServer]:
    """The stand-in on an event loop of its own thread, for a client in another process."""
    loop = asyncio.new_event_loop()
    started: queue.Queue[FileApiServer] = queue.Queue()
    stop = asyncio.Event()

    async def serve() -> None:
        async with serve_file_api(api) as server:
            started.put(server)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield started.get(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def connection_config(api: FileApi, server: FileApiServer) -> dict[str, str]:
    """A Connection's config with every URL of the entry moved to the stand-in."""
    config = {"baseUrl": server.origin, "tokenUrl": server.origin + TOKEN_PATHS[api]}
    if api == "msGraphDrive":
        config |= {"tenantId": TENANT, "site": SITE}
    return config


def credentials() -> dict[str, str]:
    return {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "refreshToken": REFRESH_TOKEN}
