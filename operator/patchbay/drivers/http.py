"""The http driver: proves that an HTTP API accepts a Connection's credentials.

It makes one authenticated request (the connector's ``verification.http``)
and then the connector's ``http`` capability checks, all through one
``aiohttp`` session per verification.

Egress: every host name is resolved by ``EgressResolver``, which asks the
egress policy, so the addresses a connection uses are exactly the ones the
policy approved (no second lookup an attacker could rebind). aiohttp skips
the resolver for IP-literal hosts, so those are checked before each request.
Redirects are followed here rather than by aiohttp, so that every hop gets
that check and credentials are not handed to a different host.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from patchbay.api.connector import AuthSpec, CheckSpec, HttpRequestSpec
from patchbay.drivers.base import (
    INCONCLUSIVE,
    CheckOutcome,
    ConfigValue,
    DriverError,
    Egress,
    VerifyOutcome,
    VerifyRequest,
    summarize_checks,
)
from patchbay.drivers.web import (
    CONTROL_CHARACTERS,
    USER_AGENT,
    EgressResolver,
    classify_client_error,
    client_ssl_context,
    is_ip_literal,
    parse_retry_after,
)
from patchbay.reasons import Reason

MAX_REDIRECTS = 5
SNIPPET_CHARS = 200
# Enough of an error body for a useful snippet; never buffer a large response.
_BODY_READ_LIMIT = 4096
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
# Error bodies often echo the request URL: mask every query value in them.
_QUERY_VALUE = re.compile(r"([?&;][^=\s&?#\"'<>]{1,256}=)[^&\s\"'<>#]*")
_TEXT_TYPES = ("application/json", "application/xml", "application/problem+json")


@dataclass(frozen=True)
class _Credentials:
    """What authenticates a request, and the values to scrub from any text we show."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    sensitive: tuple[str, ...]


@dataclass(frozen=True)
class _Response:
    status: int
    label: str
    server: str | None
    retry_after: float | None
    snippet: str


def safe_url(url: URL) -> str:
    """The URL as shown in messages: no user info, query string or fragment."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _has_control(value: str) -> bool:
    return any(c in value for c in "\r\n\x00")


def _secret(request: VerifyRequest, key: str) -> str:
    value = request.value(key)
    if value is None or value == "":
        raise DriverError(
            Reason.SECRET_KEY_MISSING,
            f"the credentials have no value for variable {key}",
        )
    text = str(value)
    if _has_control(text):
        # aiohttp would reject the header and might quote the value in its error.
        raise DriverError(
            Reason.CONFIG_INVALID,
            f"variable {key} contains a line break or NUL character",
        )
    return text


def _credentials(request: VerifyRequest) -> _Credentials:
    auth: AuthSpec = request.auth
    if auth.type == "none":
        return _Credentials(headers={}, query={}, sensitive=())
    if auth.type == "basic":
        username = _secret(request, "username")
        password = _secret(request, "password")
        if ":" in username:
            raise DriverError(
                Reason.CONFIG_INVALID, "variable username must not contain ':' for basic auth"
            )
        # UTF-8 as RFC 7617 recommends; built by hand because aiohttp.BasicAuth is deprecated.
        pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        header = f"Basic {pair}"
        return _Credentials(
            headers={"Authorization": header},
            query={},
            # The encoded pair too: a server may echo the Authorization header.
            sensitive=(password, header, pair),
        )
    if auth.type == "bearer":
        token = _secret(request, "token")
        bearer = auth.bearer
        name = bearer.header if bearer else "Authorization"
        value = (bearer.prefix if bearer else "Bearer ") + token
        return _Credentials(headers={name: value}, query={}, sensitive=(token, value))
    if auth.type == "apiKey":
        api_key = _secret(request, "apiKey")
        spec = auth.api_key
        if spec is None:
            raise DriverError(Reason.CONFIG_INVALID, "auth.apiKey is required for apiKey auth")
        if spec.in_ == "query":
            return _Credentials(headers={}, query={spec.name: api_key}, sensitive=(api_key,))
        value = (spec.prefix or "") + api_key
        return _Credentials(headers={spec.name: value}, query={}, sensitive=(api_key, value))
    raise DriverError(
        Reason.CONFIG_INVALID, f"auth type {auth.type} is not supported by the http driver yet"
    )


def _scrub(text: str, sensitive: Sequence[str]) -> str:
    """Remove credential values in every form an echoing server might show them."""
    forms: set[str] = set()
    for value in sensitive:
        if value:
            forms.update(
                {value, quote(value, safe=""), quote(value), quote(value).replace("%20", "+")}
            )
            forms.add(URL.build(query={"k": value}).raw_query_string[2:])
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return _QUERY_VALUE.sub(r"\1***", text)


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in _TEXT_TYPES
        or content_type.endswith(("+json", "+xml"))
    )


class _Exchange:
    """One verification's session, target and credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        egress: Egress,
        base: URL,
        config: Mapping[str, ConfigValue],
        credentials: _Credentials,
        ssl_context: ssl.SSLContext | bool,
        server_name: str | None,
    ) -> None:
        self.session = session
        self.egress = egress
        self.base = base
        self.config = config
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.server_name = server_name

    def fail(self, code: Reason, message: str, *, retryable: bool | None = None) -> DriverError:
        return DriverError(code, _scrub(message, self.credentials.sensitive), retryable=retryable)

    def url_for(self, path: str) -> URL:
        """The base URL plus the path, placeholders filled and URL-quoted; "" is the base."""
        if not path:
            return self._with_credential_query(self.base)

        def substitute(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in self.config:
                # Secret values never go into a URL: URLs end up in logs.
                raise DriverError(
                    Reason.CONFIG_INVALID,
                    f"path {path} names {{{key}}}, which is not a non-secret variable",
                )
            value = self.config[key]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            return quote(text, safe="")

        filled = _PLACEHOLDER.sub(substitute, path)
        try:
            url = URL(str(self.base).rstrip("/") + filled)
        except ValueError:
            raise DriverError(
                Reason.CONFIG_INVALID, f"path {path} does not make a valid URL"
            ) from None
        return self._with_credential_query(url)

    def _with_credential_query(self, url: URL) -> URL:
        return url.update_query(self.credentials.query) if self.credentials.query else url

    def _trusted(self, url: URL) -> bool:
        """Credentials go only to the base URL's host, and never over a downgrade to http."""
        base = self.base
        if (url.host or "").lower() != (base.host or "").lower():
            return False
        if base.scheme == "https" and url.scheme != "https":
            return False
        return url.port == base.port or (url.scheme == "https" and url.is_default_port())

    def _headers(self, spec: HttpRequestSpec, with_credentials: bool) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in spec.headers.items():
            if _has_control(name) or _has_control(value):
                raise DriverError(
                    Reason.CONFIG_INVALID, f"header {name!r} contains a line break or NUL character"
                )
            headers[name] = value
        if with_credentials:
            # Credentials win over a connector's extra header of the same name.
            headers.update(self.credentials.headers)
        return headers

    async def _open(
        self, method: str, url: URL, spec: HttpRequestSpec, with_credentials: bool, label: str
    ) -> aiohttp.ClientResponse:
        host = url.raw_host or ""
        try:
            if is_ip_literal(host):
                # aiohttp does not call the resolver for IP literals.
                await self.egress.resolve(host, url.port or 0)
            return await self.session.request(
                method,
                url,
                headers=self._headers(spec, with_credentials),
                allow_redirects=False,
                ssl=self.ssl_context if url.scheme == "https" else True,
                # The override names the base URL's server, not a redirect target.
                server_hostname=(
                    self.server_name if host.lower() == (self.base.raw_host or "").lower() else None
                ),
            )
        except Exception as exc:
            mapped = classify_client_error(exc)
            if mapped is None:
                raise
            code, detail, retryable = mapped
            raise self.fail(code, f"{label}: {detail}", retryable=retryable) from None

    async def send(self, spec: HttpRequestSpec) -> _Response:
        """Make the request, following up to MAX_REDIRECTS redirects."""
        method: str = spec.method
        url = self.url_for(spec.path)
        first = f"{method} {safe_url(url)}"
        label = first
        with_credentials = True
        for _ in range(MAX_REDIRECTS + 1):
            if url.scheme not in ("http", "https") or not url.host:
                raise self.fail(Reason.PROTOCOL_ERROR, f"{label}: not an http(s) URL")
            resp = await self._open(method, url, spec, with_credentials, label)
            try:
                location = resp.headers.get("Location")
                if (
                    resp.status not in _REDIRECT_STATUSES
                    or resp.status in spec.expect_status
                    or not location
                ):
                    return await self._response(resp, label)
                try:
                    url = resp.url.join(URL(location))
                except ValueError:
                    raise self.fail(
                        Reason.PROTOCOL_ERROR, f"{label}: redirect to an invalid URL"
                    ) from None
            finally:
                resp.release()
            if (resp.status == 303 and method != "HEAD") or (
                resp.status in (301, 302) and method == "POST"
            ):
                method = "GET"
            with_credentials = with_credentials and self._trusted(url)
            if with_credentials:
                url = self._with_credential_query(url)
            label = f"{first} (redirected to {method} {safe_url(url)})"
        raise self.fail(Reason.PROTOCOL_ERROR, f"{first}: more than {MAX_REDIRECTS} redirects")

    async def _response(self, resp: aiohttp.ClientResponse, label: str) -> _Response:
        snippet = ""
        if resp.status >= 500 and _is_text(resp.content_type):
            try:
                raw = await resp.content.read(_BODY_READ_LIMIT)
            except (aiohttp.ClientError, OSError):
                raw = b""  # the status alone is the answer
            try:
                text = raw.decode(resp.charset or "utf-8", errors="replace")
            except LookupError:
                text = raw.decode("utf-8", errors="replace")
            text = CONTROL_CHARACTERS.sub(" ", _scrub(text, self.credentials.sensitive)).strip()
            snippet = text[:SNIPPET_CHARS]
        server = resp.headers.get("Server")
        return _Response(
            status=resp.status,
            label=label,
            server=CONTROL_CHARACTERS.sub(" ", server)[:256] if server else None,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            snippet=snippet,
        )

    async def request(self, spec: HttpRequestSpec) -> _Response:
        """Send, and raise a DriverError for any status not in spec.expect_status."""
        response = await self.send(spec)
        status, label = response.status, response.label
        if status in spec.expect_status:
            return response
        if status == 401:
            raise self.fail(
                Reason.AUTHENTICATION_FAILED,
                f"{label}: HTTP 401, the server rejected the credentials",
            )
        if status == 403:
            raise self.fail(
                Reason.PERMISSION_DENIED, f"{label}: HTTP 403, the credentials lack permission"
            )
        if status == 404:
            raise self.fail(Reason.RESOURCE_NOT_FOUND, f"{label}: HTTP 404, not found")
        if status == 429:
            message = f"{label}: HTTP 429, rate limited"
            if response.retry_after is not None:
                message += f"; retry after {response.retry_after:.0f}s"
            error = self.fail(Reason.RATE_LIMITED, message)
            error.retry_after = response.retry_after
            raise error
        if 500 <= status <= 599:
            message = f"{label}: HTTP {status} from server"
            if response.snippet:
                message += f": {response.snippet}"
            raise self.fail(Reason.PROVIDER_ERROR, message, retryable=True)
        expected = ", ".join(str(s) for s in spec.expect_status)
        raise self.fail(
            Reason.PROTOCOL_ERROR, f"{label}: unexpected HTTP {status} (expected {expected})"
        )


def _base_url(request: VerifyRequest) -> URL:
    raw = request.value("baseUrl")
    if not isinstance(raw, str) or not raw:
        raise DriverError(Reason.CONFIG_INVALID, "variable baseUrl is required")
    try:
        url = URL(raw)
    except ValueError:
        raise DriverError(Reason.CONFIG_INVALID, "variable baseUrl is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise DriverError(
            Reason.CONFIG_INVALID, "variable baseUrl must be an http:// or https:// URL"
        )
    if url.user is not None or url.password is not None:
        # Credentials belong in the Secret, and a URL ends up in messages.
        raise DriverError(Reason.CONFIG_INVALID, "variable baseUrl must not contain credentials")
    if url.query_string or url.fragment:
        raise DriverError(
            Reason.CONFIG_INVALID, "variable baseUrl must not have a query string or fragment"
        )
    return url


class HttpDriver:
    """Verifies HTTP APIs with none, basic, bearer or API-key authentication."""

    name = "http"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        base = _base_url(request)
        credentials = _credentials(request)
        # Without a configured request, GET the base URL itself.
        spec = request.http or HttpRequestSpec.model_construct(
            method="GET", path="", expect_status=[200], headers={}
        )
        tls = request.tls
        ssl_context: ssl.SSLContext | bool = True
        if tls is not None and (tls.ca_pem or tls.client_cert_pem or tls.client_key_pem):
            ssl_context = await asyncio.to_thread(client_ssl_context, tls)
        connector = aiohttp.TCPConnector(
            resolver=EgressResolver(egress),
            # Every new connection must pass the policy: no cached answers.
            use_dns_cache=False,
        )
        # The context manager closes the session also when the runner's
        # timeout cancels us.
        async with aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            # No proxies or netrc from the operator's environment.
            trust_env=False,
        ) as session:
            exchange = _Exchange(
                session,
                egress,
                base,
                {k: v for k, v in request.config.items() if k not in request.secrets},
                credentials,
                ssl_context,
                tls.server_name if tls else None,
            )
            started = time.monotonic()
            response = await exchange.request(spec)
            latency_ms = round((time.monotonic() - started) * 1000)
            results = [await _run_check(exchange, check) for check in request.checks]
        checks = [outcome for outcome, _ in results]
        outcome = summarize_checks(checks, server_version=response.server, latency_ms=latency_ms)
        retry_after = next((r for _, r in results if r is not None), None)
        if outcome.code == Reason.RATE_LIMITED and retry_after is not None:
            outcome = replace(outcome, retry_after=retry_after)
        return outcome


async def _run_check(exchange: _Exchange, check: CheckSpec) -> tuple[CheckOutcome, float | None]:
    """The check's outcome and, when it was rate limited, the server's Retry-After."""
    if check.type != "http" or check.http is None:
        target = check.path or check.table or check.sql or ""
        return (
            CheckOutcome(
                type=check.type,
                target=target[:200],
                result="Failed",
                code=Reason.CONFIG_INVALID,
                message=f"check type {check.type} is not supported by the http driver",
            ),
            None,
        )
    target = f"{check.http.method} {check.http.path}"
    try:
        response = await exchange.request(check.http)
    except DriverError as error:
        outcome = CheckOutcome(
            type="http",
            target=target,
            result="Unknown" if error.code in INCONCLUSIVE else "Failed",
            code=error.code,
            message=error.message,
        )
        return outcome, error.retry_after
    return (
        CheckOutcome(
            type="http",
            target=target,
            result="Succeeded",
            code=Reason.VERIFIED,
            message=f"HTTP {response.status}",
        ),
        None,
    )
