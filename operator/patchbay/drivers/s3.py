"""The s3 driver: proves that an S3-compatible object store accepts a Connection's keys.

It makes S3 REST calls signed with botocore's Signature Version 4 signer and
sends them with aiohttp through ``EgressResolver``, so the egress policy
decides on the very address each request goes to. A full SDK client (botocore
in a thread, or aiobotocore) keeps its own connection pool and looks the
endpoint up again itself, out of the policy's reach; the few read-only calls
needed here are small enough to make directly.

Verification lists at most one key under the Connection's prefix
(ListObjectsV2), which proves the keys, the bucket and the right to list where
the Connection works. Capability checks, with paths relative to that prefix:
``listFiles`` lists one key in a folder (its path with a trailing slash),
``readObject`` reads the first byte of an object.

File browsing (``FileBrowsing``) lists the bucket as folders with
ListObjectsV2 and the delimiter "/", rooted at the prefix: common prefixes are
directories, objects are files. Pages hold at most ``PAGE_SIZE`` entries and
S3's continuation token is the page token.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import re
import ssl
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDictProxy
from yarl import URL

from patchbay.api.connector import CheckSpec, CheckType
from patchbay.api.reasons import Reason
from patchbay.drivers.base import (
    Deadline,
    DriverError,
    DriverInfo,
    Egress,
    FileBrowser,
    FileBrowsing,
    FileEntry,
    FilePage,
    SelectionLimits,
    SelectionReport,
    VerifyOutcome,
    VerifyRequest,
    config_text,
    secret_text,
    walk_selection,
)
from patchbay.drivers.checks import CheckFunction, check_subject, run_checks
from patchbay.drivers.text import printable
from patchbay.drivers.web import (
    check_ip_literal,
    classify_client_error,
    client_ssl_context,
    egress_session,
    is_ip_literal,
    parse_retry_after,
)
from patchbay.workers import run_cpu

DEFAULT_REGION = "us-east-1"
# A listing of one key, or an error document, is far smaller than this.
_BODY_READ_LIMIT = 64 * 1024
# Entries in one page of a file listing: S3's own maximum for one ListObjectsV2 call.
PAGE_SIZE = 1000
# A page of PAGE_SIZE entries with 1024-byte keys, percent-encoded, fits in this.
_PAGE_READ_LIMIT = 8 * 1024 * 1024
_MESSAGE_CHARS = 300
_REGION = re.compile(r"[A-Za-z0-9-]{1,64}")
_BUCKET_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")

# S3 error codes (the <Code> of an error document) that name a reason; any
# other code is a ProviderError that quotes it.
_BY_ERROR_CODE: dict[str, Reason] = {
    "NoSuchBucket": Reason.RESOURCE_NOT_FOUND,
    "NoSuchKey": Reason.RESOURCE_NOT_FOUND,
    "InvalidAccessKeyId": Reason.AUTHENTICATION_FAILED,
    "SignatureDoesNotMatch": Reason.AUTHENTICATION_FAILED,
    "InvalidToken": Reason.AUTHENTICATION_FAILED,
    "InvalidTokenId": Reason.AUTHENTICATION_FAILED,  # MinIO's name for InvalidToken
    "ExpiredToken": Reason.AUTHENTICATION_FAILED,
    "TokenRefreshRequired": Reason.AUTHENTICATION_FAILED,
    "AccessDenied": Reason.PERMISSION_DENIED,
    "AllAccessDisabled": Reason.PERMISSION_DENIED,
    "AccountProblem": Reason.PERMISSION_DENIED,
    "SlowDown": Reason.RATE_LIMITED,
    "ServiceUnavailable": Reason.RATE_LIMITED,
    "RequestLimitExceeded": Reason.RATE_LIMITED,
    # The bucket lives in another region or behind another endpoint.
    "PermanentRedirect": Reason.CONFIG_INVALID,
    "AuthorizationHeaderMalformed": Reason.CONFIG_INVALID,
    "InvalidRegion": Reason.CONFIG_INVALID,
    "InvalidBucketName": Reason.CONFIG_INVALID,
    # A request parameter the Connection or the caller chose, e.g. a forged page token.
    "InvalidArgument": Reason.CONFIG_INVALID,
}
# Only when the response carries no error document (e.g. a proxy's answer).
_BY_STATUS: dict[int, Reason] = {
    401: Reason.AUTHENTICATION_FAILED,
    403: Reason.PERMISSION_DENIED,
    404: Reason.RESOURCE_NOT_FOUND,
    429: Reason.RATE_LIMITED,
    503: Reason.RATE_LIMITED,
}


@dataclass(frozen=True)
class _Object:
    key: str
    size: int | None
    modified: datetime.datetime | None


@dataclass(frozen=True)
class _Listing:
    folders: tuple[str, ...]  # full prefixes, each ending in "/"
    objects: tuple[_Object, ...]
    next_token: str | None


def _iso_time(text: str | None) -> datetime.datetime | None:
    """A listing's LastModified, e.g. 2024-05-01T12:00:00.000Z."""
    try:
        return datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _http_time(text: str | None) -> datetime.datetime | None:
    """A Last-Modified header, e.g. Wed, 01 May 2024 12:00:00 GMT."""
    try:
        return email.utils.parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or limit bytes, whichever comes first.

    One read() returns what has arrived so far, which may be only part of it.
    """
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _xml(body: bytes) -> ElementTree.Element | None:
    """The parsed document, or None when it is not XML.

    expat neither fetches external entities nor expands entities without
    bound, and the body is capped at _BODY_READ_LIMIT before it gets here.
    """
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None


def _child_text(element: ElementTree.Element, name: str) -> str | None:
    for child in element:
        if _local_name(child.tag) == name:
            return child.text or ""
    return None


def _error_for(reply: _Reply, label: str) -> DriverError:
    """The classified error for a response that is not a success."""
    document = _xml(reply.body) if reply.body else None
    code = message = None
    if document is not None and _local_name(document.tag) == "Error":
        code = _child_text(document, "Code")
        message = _child_text(document, "Message")
    retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    if code:
        reason = _BY_ERROR_CODE.get(code, Reason.PROVIDER_ERROR)
        text = f"{label}: {printable(code, 64)}"
        if message:
            text += f": {printable(message, _MESSAGE_CHARS)}"
    elif 300 <= reply.status < 400:
        reason = Reason.CONFIG_INVALID
        text = f"{label}: HTTP {reply.status}, the bucket is served by another endpoint or region"
    else:
        reason = _BY_STATUS.get(reply.status, Reason.PROVIDER_ERROR)
        if reason == Reason.PROVIDER_ERROR and reply.status < 500:
            reason = Reason.PROTOCOL_ERROR  # a client error without an S3 error document
        text = f"{label}: HTTP {reply.status} without an S3 error document"
    if reason == Reason.RATE_LIMITED and retry_after is not None:
        text += f"; retry after {retry_after:.0f}s"
    error = DriverError(reason, text)
    error.retry_after = retry_after if reason == Reason.RATE_LIMITED else None
    return error


def _endpoint(request: VerifyRequest, region: str) -> URL:
    raw = config_text(request, "endpoint", f"https://s3.{region}.amazonaws.com")
    try:
        url = URL(raw)
    except ValueError:
        raise DriverError(Reason.CONFIG_INVALID, "endpoint is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise DriverError(Reason.CONFIG_INVALID, "endpoint must be an http:// or https:// URL")
    if url.user is not None or url.password is not None:
        raise DriverError(Reason.CONFIG_INVALID, "endpoint must not contain credentials")
    if url.query_string or url.fragment:
        raise DriverError(
            Reason.CONFIG_INVALID, "endpoint must not have a query string or fragment"
        )
    return url


def _bucket(request: VerifyRequest) -> str:
    bucket = config_text(request, "bucket")
    if not set(bucket) <= _BUCKET_CHARACTERS or len(bucket) > 255:
        raise DriverError(
            Reason.CONFIG_INVALID,
            "bucket may contain only letters, digits, '.', '-' and '_'",
        )
    return bucket


def _path_style(request: VerifyRequest) -> bool:
    value = request.value("pathStyle")
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise DriverError(Reason.CONFIG_INVALID, "pathStyle must be true or false")


def _as_folder(path: str) -> str:
    """A key prefix that names a folder: no leading slash, one trailing slash."""
    path = path.strip("/")
    return f"{path}/" if path else ""


def _query(params: Mapping[str, str]) -> str:
    """A canonical query string: sorted, every reserved character percent-encoded.

    The signer reads the query from the URL as it is, and aiohttp sends the URL
    unchanged, so both see exactly this text.
    """
    return "&".join(
        f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in sorted(params.items())
    )


def bucket_address(endpoint: URL, bucket: str, path_style: bool) -> tuple[URL, str]:
    """The origin (scheme, host, port) requests go to and the bucket's path there.

    Virtual-hosted addressing needs the bucket to be a DNS label under the
    endpoint's name; otherwise (an IP address, dots that would break a TLS
    wildcard certificate, upper case) it falls back to path style, as the AWS
    SDKs do.
    """
    base_path = endpoint.raw_path.rstrip("/")
    virtual = (
        not path_style
        and not is_ip_literal(endpoint.raw_host or "")
        and bucket == bucket.lower()
        and "." not in bucket
        and "_" not in bucket
    )
    if virtual:
        return endpoint.with_host(f"{bucket}.{endpoint.raw_host}").origin(), base_path
    return endpoint.origin(), f"{base_path}/{quote(bucket, safe='')}"


class _Bucket:
    """One verification's session, bucket address and signer."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        egress: Egress,
        endpoint: URL,
        bucket: str,
        path_style: bool,
        signer: S3SigV4Auth,
        ssl_context: ssl.SSLContext | bool,
        server_name: str | None,
    ) -> None:
        self.session = session
        self.egress = egress
        self.bucket = bucket
        self.signer = signer
        self.ssl_context = ssl_context
        self.server_name = server_name
        # The Server header of the last answer, e.g. "MinIO" or "AmazonS3".
        self.server: str | None = None
        self.origin, self.bucket_path = bucket_address(endpoint, bucket, path_style)

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def _url(self, key: str, params: Mapping[str, str]) -> str:
        path = f"{self.bucket_path}/{quote(key, safe='/')}" if key else self.bucket_path or "/"
        query = _query(params)
        return f"{self.origin}{path}" + (f"?{query}" if query else "")

    def _sign(self, method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        signed = AWSRequest(method=method, url=url, headers=dict(headers))
        self.signer.add_auth(signed)
        return {name: str(value) for name, value in signed.headers.items()}

    async def call(
        self,
        label: str,
        key: str = "",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        body_limit: int = _BODY_READ_LIMIT,
    ) -> _Reply:
        """Request a bucket or object URL; read at most body_limit bytes of the answer."""
        url = self._url(key, params or {})
        https = self.origin.scheme == "https"
        try:
            await check_ip_literal(self.egress, self.origin)
            async with self.session.request(
                method,
                URL(url, encoded=True),
                headers=self._sign(method, url, headers or {}),
                allow_redirects=False,
                ssl=self.ssl_context if https else True,
                server_hostname=self.server_name if https else None,
            ) as response:
                body = await _read_at_most(response.content, body_limit)
                server = response.headers.get("Server")
                self.server = printable(server) if server else None
                return _Reply(response.status, response.headers, body)
        except Exception as exc:
            mapped = classify_client_error(exc)
            if mapped is None:
                raise
            code, detail, retryable = mapped
            raise DriverError(code, f"{label}: {detail}", retryable=retryable) from None

    async def _list(
        self, prefix: str, params: Mapping[str, str], body_limit: int = _BODY_READ_LIMIT
    ) -> ElementTree.Element:
        """The ListBucketResult of a ListObjectsV2 call for keys under prefix."""
        label = f"list {self.describe(prefix)}"
        query = {"list-type": "2", **params}
        if prefix:
            query["prefix"] = prefix
        reply = await self.call(label, params=query, body_limit=body_limit)
        if reply.status != 200:
            raise _error_for(reply, label)
        document = _xml(reply.body)
        if document is None or _local_name(document.tag) != "ListBucketResult":
            raise DriverError(Reason.PROTOCOL_ERROR, f"{label}: the answer is not an S3 listing")
        return document

    async def list_one(self, prefix: str) -> int:
        """How many keys (0 or 1) a ListObjectsV2 call of one key under prefix returns."""
        document = await self._list(prefix, {"max-keys": "1"})
        return sum(1 for child in document if _local_name(child.tag) == "Contents")

    async def list_folder(self, folder: str, token: str | None) -> _Listing:
        """One page of the keys and sub-folders directly in folder (a prefix ending in "/")."""
        # encoding-type=url: keys may hold characters that XML 1.0 cannot carry.
        params = {"delimiter": "/", "max-keys": str(PAGE_SIZE), "encoding-type": "url"}
        if token is not None:
            params["continuation-token"] = token
        document = await self._list(folder, params, _PAGE_READ_LIMIT)
        folders: list[str] = []
        objects: list[_Object] = []
        for child in document:
            tag = _local_name(child.tag)
            if tag == "CommonPrefixes":
                folders.append(unquote_plus(_child_text(child, "Prefix") or ""))
            elif tag == "Contents":
                size = _child_text(child, "Size") or ""
                objects.append(
                    _Object(
                        unquote_plus(_child_text(child, "Key") or ""),
                        int(size) if size.isdigit() else None,
                        _iso_time(_child_text(child, "LastModified")),
                    )
                )
        truncated = _child_text(document, "IsTruncated") == "true"
        next_token = _child_text(document, "NextContinuationToken") if truncated else None
        return _Listing(tuple(folders), tuple(objects), next_token or None)

    async def head(self, key: str) -> _Object | None:
        """An object's size and modification time; None when there is no such object."""
        label = f"read {self.describe(key)}"
        reply = await self.call(label, key, method="HEAD")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise _error_for(reply, label)
        length = reply.headers.get("Content-Length", "")
        return _Object(
            key,
            int(length) if length.isdigit() else None,
            _http_time(reply.headers.get("Last-Modified")),
        )

    async def read_first_byte(self, key: str) -> str:
        """Read the first byte of an object; the reply's description."""
        label = f"read {self.describe(key)}"
        reply = await self.call(label, key, headers={"Range": "bytes=0-0"})
        if reply.status in (200, 206):
            return "readable"
        if reply.status == 416:
            # S3 answers a range request on an empty object with InvalidRange.
            return "readable (empty object)"
        raise _error_for(reply, label)


def _credentials(request: VerifyRequest) -> Credentials:
    if request.auth.type != "awsAccessKey":
        raise DriverError(
            Reason.CONFIG_INVALID,
            f"auth type {request.auth.type} is not supported by the s3 driver; use awsAccessKey",
        )
    token = request.value("sessionToken")
    return Credentials(
        access_key=secret_text(request, "accessKeyId"),
        secret_key=secret_text(request, "secretAccessKey"),
        token=str(token) if token else None,
    )


class _Checks:
    """The driver's check functions, with paths relative to the Connection's prefix."""

    def __init__(self, bucket: _Bucket, prefix: str) -> None:
        self._bucket = bucket
        self._prefix = prefix

    async def list_files(self, check: CheckSpec) -> str:
        folder = self._prefix + _as_folder(check_subject(check))
        found = await self._bucket.list_one(folder)
        # An empty bucket or prefix of the Connection itself is still listable;
        # a path below it exists only if some key starts with it.
        if not found and folder != self._prefix:
            raise DriverError(
                Reason.RESOURCE_NOT_FOUND, f"no object under {self._bucket.describe(folder)}"
            )
        return "listable"

    async def read_object(self, check: CheckSpec) -> str:
        key = check_subject(check).lstrip("/")
        if not key:
            raise DriverError(Reason.CONFIG_INVALID, "a readObject check needs an object's path")
        return await self._bucket.read_first_byte(self._prefix + key)

    def functions(self) -> dict[CheckType, CheckFunction]:
        return {"listFiles": self.list_files, "readObject": self.read_object}


@contextlib.asynccontextmanager
async def _opened(request: VerifyRequest, egress: Egress) -> AsyncIterator[tuple[_Bucket, str]]:
    """The Connection's bucket, ready for signed requests, and its prefix as a folder."""
    region = config_text(request, "region", DEFAULT_REGION)
    if not _REGION.fullmatch(region):
        raise DriverError(Reason.CONFIG_INVALID, "region must look like eu-west-1")
    endpoint = _endpoint(request, region)
    bucket_name = _bucket(request)
    prefix = _as_folder(config_text(request, "prefix", ""))
    signer = S3SigV4Auth(_credentials(request), "s3", region)
    tls = request.tls
    ssl_context: ssl.SSLContext | bool = True
    if tls is not None and (tls.ca_pem or tls.client_cert_pem or tls.client_key_pem):
        ssl_context = await run_cpu(client_ssl_context, tls)
    async with egress_session(egress) as session:
        yield (
            _Bucket(
                session,
                egress,
                endpoint,
                bucket_name,
                _path_style(request),
                signer,
                ssl_context,
                tls.server_name if tls else None,
            ),
            prefix,
        )


def _name(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


class S3FileBrowser:
    """FileBrowser over one bucket, rooted at the Connection's prefix.

    Paths are relative to the prefix and written with a leading "/": "/incoming" is the
    folder (or object) prefix + "incoming".
    """

    def __init__(self, bucket: _Bucket, root: str) -> None:
        self._bucket = bucket
        self._root = root

    def _path(self, key: str) -> str:
        return "/" + key.removeprefix(self._root).rstrip("/")

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        relative = path.strip("/")
        folder = self._root + _as_folder(relative)
        listing = await self._bucket.list_folder(folder, page_token)
        # A folder marker (a key ending in "/", as consoles create) is the folder itself.
        objects = [o for o in listing.objects if o.key != folder]
        found_folder = bool(listing.folders or listing.objects)
        if page_token is None and relative and not found_folder:
            found = await self._bucket.head(self._root + relative)
            if found is None:
                raise DriverError(
                    Reason.RESOURCE_NOT_FOUND,
                    f"nothing exists at {path} ({self._bucket.describe(self._root + relative)})",
                )
            # The path as given, so that the caller recognises the file it asked for.
            entry = FileEntry(_name(relative), "file", path, found.size, found.modified)
            return FilePage((entry,))
        entries = [
            FileEntry(_name(prefix), "directory", self._path(prefix)) for prefix in listing.folders
        ] + [
            FileEntry(_name(o.key), "file", self._path(o.key), o.size, o.modified) for o in objects
        ]
        entries.sort(key=lambda entry: entry.name)
        return FilePage(tuple(entries), listing.next_token)

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)


class S3Driver:
    """Verifies an S3 bucket (AWS or any S3-compatible store) with access keys."""

    name = "s3"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        deadline = Deadline(request.timeout_seconds)
        async with _opened(request, egress) as (bucket, prefix):
            started = time.monotonic()
            await bucket.list_one(prefix)
            latency_ms = round((time.monotonic() - started) * 1000)
            checks = _Checks(bucket, prefix).functions()
            results = await run_checks(self.name, request, checks, deadline)
        return results.outcome(server_version=bucket.server, latency_ms=latency_ms)

    @contextlib.asynccontextmanager
    async def browse_files(
        self, request: VerifyRequest, egress: Egress
    ) -> AsyncIterator[FileBrowser]:
        async with _opened(request, egress) as (bucket, prefix):
            yield S3FileBrowser(bucket, prefix)


# Checked by mypy, as factory= below checks the Driver interface: the class can
# browse as its capabilities say.
_files: FileBrowsing = S3Driver()
DRIVER = DriverInfo(
    name=S3Driver.name,
    binding_type="s3",
    default_port=None,  # the endpoint URL says
    capabilities=frozenset({"verify", "files"}),
    factory=S3Driver,
)
