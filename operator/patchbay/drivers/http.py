"""The http driver: proves that an HTTP API accepts a Connection's credentials.

It makes one authenticated request (the connector's ``verification.http``)
and then the connector's ``http`` capability checks, all through one
``aiohttp`` session per verification. The OAuth 2.0 grants first exchange
the Connection's credentials for an access token at the connector's token
endpoint, in the same session, and send that token as a Bearer token or
where ``auth.oauth2.accessToken`` says; the access token lives only for the
verification and is scrubbed from every message like the Secret's values.

Egress: every host name is resolved by ``EgressResolver``, which asks the
egress policy, so the addresses a connection uses are exactly the ones the
policy approved (no second lookup an attacker could rebind). aiohttp skips
the resolver for IP-literal hosts, so those are checked before each request.
Redirects are followed here rather than by aiohttp, so that every hop gets
that check and credentials (a client certificate included) are not handed
to a different host. Token requests are never redirected.

``http_session`` opens the same exchange for the SaaS file browsers of discovery
(``patchbay.drivers.saasfiles``), which read whole answers through ``follow`` and
classify them with ``error_for`` as the verification does.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus, urlencode

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from patchbay.api.connector import (
    OAUTH2_GRANTS,
    AuthSpec,
    CheckSpec,
    ClientAssertion,
    CredentialPlacement,
    HttpErrorRule,
    HttpRequestSpec,
)
from patchbay.api.reasons import Reason
from patchbay.drivers.assertion import (
    ASSERTION_TYPE,
    AssertionClaims,
    AssertionKeyError,
    client_assertion,
)
from patchbay.drivers.base import (
    ACCESS_TOKEN_KEY,
    EXPIRES_AT_FORMAT,
    EXPIRES_AT_KEY,
    ConfigValue,
    Deadline,
    DriverError,
    DriverInfo,
    Egress,
    TlsMaterial,
    VerifyOutcome,
    VerifyRequest,
    secret_text,
)
from patchbay.drivers.checks import run_checks
from patchbay.drivers.text import REDACTED, printable, scrub
from patchbay.drivers.web import (
    check_ip_literal,
    classify_client_error,
    client_ssl_context,
    egress_session,
    parse_retry_after,
)
from patchbay.workers import run_cpu

MAX_REDIRECTS = 5
SNIPPET_CHARS = 200
# Enough of an error body for a useful snippet; never buffer a large response.
_BODY_READ_LIMIT = 4096
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
# RFC 6749 3.3: a scope token is visible ASCII other than the double quote and backslash.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Error bodies often echo the request URL: mask every query value in them.
_QUERY_VALUE = re.compile(r"([?&;][^=\s&?#\"'<>]{1,256}=)[^&\s\"'<>#]*")
_TEXT_TYPES = ("application/json", "application/xml", "application/problem+json")
# Where an access token goes unless the connector says otherwise (RFC 6750 2.1).
_BEARER_HEADER = CredentialPlacement(name="Authorization", prefix="Bearer ")
# An expires_in beyond a year is no expiry a workload could plan with.
_LONGEST_TOKEN_LIFETIME = 366 * 24 * 3600
# A token response holds a few tokens (JWTs of some kilobytes); more is not one.
_TOKEN_RESPONSE_LIMIT = 64 * 1024
# The error codes of RFC 6749 section 5.2 (two that token endpoints borrow from
# section 4.1.2.1, and one vendor's own): the reason each maps to, and what it means.
_TOKEN_ERRORS: Mapping[str, tuple[Reason, str]] = {
    "invalid_client": (Reason.AUTHENTICATION_FAILED, "the client id or secret was rejected"),
    # Salesforce's own code for a consumer key it does not know.
    "invalid_client_id": (Reason.AUTHENTICATION_FAILED, "the client id is not known"),
    "invalid_grant": (
        Reason.AUTHENTICATION_FAILED,
        "the grant was rejected: the refresh token is invalid, expired, revoked "
        "or was issued to another client",
    ),
    "unauthorized_client": (
        Reason.AUTHENTICATION_FAILED,
        "the client is not allowed to use this grant type",
    ),
    "invalid_scope": (
        Reason.PERMISSION_DENIED,
        "the requested scope is invalid or not granted to this client",
    ),
    "invalid_request": (
        Reason.PROTOCOL_ERROR,
        "the token endpoint considers the request malformed",
    ),
    "unsupported_grant_type": (
        Reason.PROTOCOL_ERROR,
        "the token endpoint does not support this grant type",
    ),
    "temporarily_unavailable": (
        Reason.PROVIDER_ERROR,
        "the token endpoint is temporarily unavailable",
    ),
    "server_error": (Reason.PROVIDER_ERROR, "the token endpoint failed"),
}


@dataclass(frozen=True)
class _Credentials:
    """What authenticates a request, and the values to scrub from any text we show."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    sensitive: tuple[str, ...]


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    label: str
    server: str | None
    retry_after: float | None
    # the start of a 5xx answer's text (of any error answer read whole), made printable
    snippet: str
    # the JSON body of an error answer that a connector's rule may read (of every answer
    # when it was read whole), else None
    document: object = None
    # the body was to be read whole but is longer than the limit
    oversized: bool = False


def safe_url(url: URL) -> str:
    """The URL as shown in messages: no user info, query string or fragment."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _has_control(value: str) -> bool:
    return any(c in value for c in "\r\n\x00")


def _secret(request: VerifyRequest, key: str) -> str:
    text = secret_text(request, key)
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
    # a Connection's own request may say where its token or key goes
    own = request.credential_placement
    if auth.type == "bearer":
        token = _secret(request, "token")
        bearer = auth.bearer
        if own is None and bearer is not None:
            own = CredentialPlacement(name=bearer.header, prefix=bearer.prefix)
        return _placed(own or _BEARER_HEADER, token)
    if auth.type == "apiKey":
        api_key = _secret(request, "apiKey")
        placement = own or auth.api_key
        if placement is None:
            raise DriverError(Reason.CONFIG_INVALID, "auth.apiKey is required for apiKey auth")
        return _placed(placement, api_key)
    if auth.type == "tlsClientCert":
        # The certificate is the credential: see _tls_material.
        return _Credentials(headers={}, query={}, sensitive=())
    raise DriverError(
        Reason.CONFIG_INVALID, f"auth type {auth.type} is not supported by the http driver"
    )


def _placed(
    placement: CredentialPlacement, value: str, scrub_too: Sequence[str] = ()
) -> _Credentials:
    """A key or token in the header or query parameter the connector names."""
    if placement.in_ == "query":
        return _Credentials(
            headers={}, query={placement.name: value}, sensitive=(*scrub_too, value)
        )
    header = (placement.prefix or "") + value
    return _Credentials(
        headers={placement.name: header}, query={}, sensitive=(*scrub_too, value, header)
    )


@dataclass(frozen=True)
class _TokenGrant:
    """A request for an access token at an OAuth 2.0 token endpoint (RFC 6749 4.4 and 6)."""

    token_url: str
    form: Mapping[str, str] = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    sensitive: tuple[str, ...] = field(repr=False)
    # Where the API requests carry the access token.
    access_token: CredentialPlacement
    # Follow the endpoint's 307/308 redirects, resending the grant.
    follow_redirects: bool = False
    # With clientAuth privateKeyJwt: what the client assertion is signed with and says.
    assertion: _AssertionSpec | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _AssertionSpec:
    """A client assertion to sign once the token URL, its audience, is known."""

    settings: ClientAssertion
    client_id: str
    private_key: str
    scope: str | None


def _token_grant(request: VerifyRequest) -> _TokenGrant:
    auth = request.auth
    if auth.oauth2 is None:
        raise DriverError(Reason.CONFIG_INVALID, f"auth.oauth2 is required for {auth.type} auth")
    client_id = _secret(request, "clientId")
    settings = auth.oauth2.client_assertion
    if (auth.oauth2.client_auth == "privateKeyJwt") != (settings is not None):
        raise DriverError(
            Reason.CONFIG_INVALID,
            "auth.oauth2.clientAssertion goes with clientAuth privateKeyJwt, and only with it",
        )
    form: dict[str, str]
    if auth.type == "oauth2RefreshToken":
        form = {"grant_type": "refresh_token", "refresh_token": _secret(request, "refreshToken")}
        # Public clients (RFC 6749 2.1) have no secret and identify themselves by id only.
        client_secret = _secret(request, "clientSecret") if request.value("clientSecret") else ""
    else:
        form = {"grant_type": "client_credentials"}
        # A client assertion takes the place of the secret.
        client_secret = "" if settings is not None else _secret(request, "clientSecret")
    scopes = [_scope(template, _public_config(request)) for template in auth.oauth2.scopes]
    scope = " ".join(scopes)
    assertion: _AssertionSpec | None = None
    if settings is not None:
        assertion = _AssertionSpec(
            settings,
            client_id,
            # PEM spans lines: read as it is, never put in a header.
            secret_text(request, "privateKey"),
            ",".join(scopes) if settings.scope_claim and scope else None,
        )
        if settings.scope_claim:
            scope = ""
    if scope:
        form["scope"] = scope
    if auth.oauth2.audience:
        form["audience"] = auth.oauth2.audience
    sensitive = [client_secret, form.get("refresh_token", "")]
    headers: dict[str, str] = {}
    if assertion is not None:
        form["client_assertion_type"] = ASSERTION_TYPE
    elif auth.oauth2.client_auth == "basic":
        # RFC 6749 2.3.1: both parts are form-encoded before they are joined.
        pair = base64.b64encode(
            f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        ).decode("ascii")
        headers["Authorization"] = f"Basic {pair}"
        sensitive += [pair, headers["Authorization"]]
    else:
        form["client_id"] = client_id
        if client_secret:
            form["client_secret"] = client_secret
    return _TokenGrant(
        auth.oauth2.token_url,
        form,
        headers,
        tuple(value for value in sensitive if value),
        auth.oauth2.access_token or _BEARER_HEADER,
        auth.oauth2.follow_redirects,
        assertion,
    )


def _tls_material(request: VerifyRequest) -> TlsMaterial | None:
    """spec.tls, with the client certificate of tlsClientCert auth taken from the credentials.

    A tlsClientCert connector may name the certificate and key as the secret
    variables clientCert and clientKey, or leave them to the Connection's
    spec.tls.clientCertSecretRef (a kubernetes.io/tls Secret); one of the two.
    """
    tls = request.tls
    if request.auth.type != "tlsClientCert":
        return tls
    from_secret_ref = tls is not None and bool(tls.client_cert_pem or tls.client_key_pem)
    cert, key = request.value("clientCert"), request.secrets.get("clientKey")
    if not (cert or key):
        if not from_secret_ref:
            raise DriverError(
                Reason.CONFIG_INVALID,
                "auth type tlsClientCert needs a client certificate: the secret variables "
                "clientCert and clientKey, or spec.tls.clientCertSecretRef",
            )
        return tls
    if from_secret_ref:
        raise DriverError(
            Reason.CONFIG_INVALID,
            "the client certificate is given twice: by the variables clientCert and clientKey "
            "and by spec.tls.clientCertSecretRef; keep one",
        )
    for variable, value in (("clientCert", cert), ("clientKey", key)):
        if not value:
            raise DriverError(
                Reason.SECRET_KEY_MISSING,
                f"the credentials have no value for variable {variable}",
            )
    return replace(tls or TlsMaterial(), client_cert_pem=str(cert), client_key_pem=key)


def _scrub(text: str, sensitive: Sequence[str]) -> str:
    """Remove credential values in every form an echoing server might show them, and every
    query value of a URL the text quotes."""
    return _QUERY_VALUE.sub(rf"\1{REDACTED}", scrub(text, sensitive))


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in _TEXT_TYPES
        or content_type.endswith(("+json", "+xml"))
    )


@dataclass(frozen=True)
class _TlsContexts:
    """The same server trust for every request; the client certificate only where
    credentials go (the base URL's host and the token endpoint), never to a
    redirect target elsewhere."""

    anonymous: ssl.SSLContext | bool = True
    credentialed: ssl.SSLContext | bool = True


def _tls_contexts(tls: TlsMaterial) -> _TlsContexts:
    """Runs in a thread, like client_ssl_context."""
    credentialed = client_ssl_context(tls)
    if not (tls.client_cert_pem or tls.client_key_pem):
        return _TlsContexts(credentialed, credentialed)
    return _TlsContexts(
        client_ssl_context(replace(tls, client_cert_pem=None, client_key_pem=None)), credentialed
    )


def _fill_placeholders(
    template: str,
    config: Mapping[str, ConfigValue],
    what: str,
    *,
    leading_url: bool = False,
    url_quoted: bool = True,
) -> str:
    """Fill {variable} placeholders with the values of non-secret variables (``config``),
    URL-quoted unless url_quoted is false.

    With leading_url, a placeholder that opens the template holds a URL
    (e.g. {baseUrl}) and goes in as it is, less a trailing slash.
    """

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in config:
            # Secret values never go into a URL or a scope: both end up in logs.
            raise DriverError(
                Reason.CONFIG_INVALID,
                f"{what} names {{{key}}}, which is not a non-secret variable",
            )
        value = config[key]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if leading_url and match.start() == 0:
            return text.rstrip("/")
        return quote(text, safe="") if url_quoted else text

    return _PLACEHOLDER.sub(substitute, template)


def _scope(template: str, config: Mapping[str, ConfigValue]) -> str:
    """A scope of auth.oauth2.scopes with its placeholders filled as they are, such as a
    national cloud's '{baseUrl}/.default'; filled, it must stay one scope token."""
    if not _PLACEHOLDER.search(template):
        return template
    what = f"auth.oauth2.scopes {template}"
    scope = _fill_placeholders(template, config, what, leading_url=True, url_quoted=False)
    if not _SCOPE_TOKEN.fullmatch(scope):
        raise DriverError(
            Reason.CONFIG_INVALID,
            f"{what} is not one scope once filled: a value holds a space, quote, backslash "
            "or control character",
        )
    return scope


def _public_config(request: VerifyRequest) -> dict[str, ConfigValue]:
    """The values of the request's non-secret variables."""
    return {k: v for k, v in request.config.items() if k not in request.secrets}


class Exchange:
    """One verification's (or discovery session's) session, target and credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        egress: Egress,
        base: URL,
        config: Mapping[str, ConfigValue],
        credentials: _Credentials,
        tls: _TlsContexts,
        server_name: str | None,
        issued: dict[str, str],
        error_rules: Sequence[HttpErrorRule] = (),
        granted: dict[str, str] | None = None,
        grant: _TokenGrant | None = None,
        before_request: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.grant = grant
        # awaited before each request, the token request and redirects included
        self.before_request = before_request
        self.session = session
        self.egress = egress
        self.base = base
        self.config = config
        self.credentials = credentials
        self.tls = tls
        self.server_name = server_name
        self.issued = issued
        self.granted = granted
        self.error_rules = error_rules
        self.ruled_statuses = frozenset(s for rule in error_rules for s in rule.status)

    def fail(self, code: Reason, message: str, *, retryable: bool | None = None) -> DriverError:
        return DriverError(code, _scrub(message, self.credentials.sensitive), retryable=retryable)

    def _join(self, path: str, what: str) -> URL:
        filled = _fill_placeholders(path, self.config, what)
        try:
            return URL(str(self.base).rstrip("/") + filled)
        except ValueError:
            raise DriverError(Reason.CONFIG_INVALID, f"{what} does not make a valid URL") from None

    def _join_path(self, path: str) -> URL:
        return self._join(path, f"path {path}") if path else self.base

    def url_for(self, path: str) -> URL:
        """The base URL plus the path, placeholders filled and URL-quoted; "" is the base."""
        return self.with_credential_query(self._join_path(path))

    def token_url(self, template: str) -> URL:
        """The token endpoint: a path on the base URL, or an absolute URL template
        such as '{instanceUrl}/services/oauth2/token' or
        'https://login.example.com/{tenant}/oauth2/token'."""
        what = f"tokenUrl {template}"
        if template.startswith("/"):
            return self._join(template, what)
        try:
            url = URL(_fill_placeholders(template, self.config, what, leading_url=True))
        except ValueError:
            raise DriverError(Reason.CONFIG_INVALID, f"{what} does not make a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise DriverError(
                Reason.CONFIG_INVALID,
                f"{what} must be a path starting with / or an http:// or https:// URL",
            )
        if url.user is not None or url.password is not None:
            raise DriverError(Reason.CONFIG_INVALID, f"{what} must not contain credentials")
        return url

    def with_credential_query(self, url: URL) -> URL:
        """The URL with the credential of an API that takes it in the query string."""
        return url.update_query(self.credentials.query) if self.credentials.query else url

    def _trusted(self, url: URL) -> bool:
        """Credentials go only to the base URL's host, and never over a downgrade to http."""
        base = self.base
        if (url.host or "").lower() != (base.host or "").lower():
            return False
        if base.scheme == "https" and url.scheme != "https":
            return False
        if url.port == base.port:
            return True
        # only the upgrade from http on its default port to https on its default port;
        # another port on the same host may be another service
        return (
            base.scheme == "http"
            and base.is_default_port()
            and url.scheme == "https"
            and url.is_default_port()
        )

    def _headers(self, extra: Mapping[str, str], with_credentials: bool) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in extra.items():
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
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        *,
        with_credentials: bool,
        label: str,
        data: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        host = url.raw_host or ""
        if self.before_request is not None:
            await self.before_request()
        with self._classified(label):
            await check_ip_literal(self.egress, url)
            tls = self.tls.credentialed if with_credentials else self.tls.anonymous
            return await self.session.request(
                method,
                url,
                headers=headers,
                data=data,
                # Without a body, no Content-Type either: aiohttp would add
                # application/octet-stream to a POST, which JSON RPC APIs refuse.
                skip_auto_headers=("Content-Type",) if data is None else (),
                allow_redirects=False,
                ssl=tls if url.scheme == "https" else True,
                # The override names the base URL's server, not a redirect target.
                server_hostname=(
                    self.server_name if host.lower() == (self.base.raw_host or "").lower() else None
                ),
            )

    @contextmanager
    def _classified(self, label: str) -> Iterator[None]:
        """Raise a failed request as its DriverError; an unclassified failure as it is."""
        try:
            yield
        except Exception as exc:
            mapped = classify_client_error(exc)
            if mapped is None:
                raise
            code, detail, retryable = mapped
            raise self.fail(code, f"{label}: {detail}", retryable=retryable) from None

    async def send(self, spec: HttpRequestSpec, *, with_credentials: bool = True) -> HttpAnswer:
        """Make the connector's request, following up to MAX_REDIRECTS redirects."""
        url = self.url_for(spec.path) if with_credentials else self._join_path(spec.path)
        return await self.follow(
            spec.method,
            url,
            spec.headers,
            with_credentials=with_credentials,
            keep=spec.expect_status,
        )

    async def follow(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        *,
        with_credentials: bool = True,
        body: bytes | None = None,
        keep: Collection[int] = (),
        read_limit: int | None = None,
    ) -> HttpAnswer:
        """Make a request, following up to MAX_REDIRECTS redirects (a status in ``keep``
        is the answer, not a redirect). With ``read_limit``, the answer's whole body of at
        most that many bytes is read as JSON into its ``document``."""
        first = f"{method} {safe_url(url)}"
        label = first
        for _ in range(MAX_REDIRECTS + 1):
            if url.scheme not in ("http", "https") or not url.host:
                raise self.fail(Reason.PROTOCOL_ERROR, f"{label}: not an http(s) URL")
            resp = await self._open(
                method,
                url,
                self._headers(headers, with_credentials),
                with_credentials=with_credentials,
                label=label,
                data=body,
            )
            try:
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECT_STATUSES or resp.status in keep or not location:
                    return await self._response(resp, label, read_limit)
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
                method, body = "GET", None
            with_credentials = with_credentials and self._trusted(url)
            if with_credentials:
                url = self.with_credential_query(url)
            label = f"{first} (redirected to {method} {safe_url(url)})"
        raise self.fail(Reason.PROTOCOL_ERROR, f"{first}: more than {MAX_REDIRECTS} redirects")

    async def _response(
        self, resp: aiohttp.ClientResponse, label: str, read_limit: int | None = None
    ) -> HttpAnswer:
        snippet = ""
        document: object = None
        oversized = False
        if read_limit is not None:
            with self._classified(label):
                whole = await _read_capped(resp, read_limit)
            oversized = whole is None
            document = _json_document(whole)
            if resp.status >= 400 and whole and _is_text(resp.content_type):
                snippet = self._snippet(whole, resp.charset)
        elif resp.status in self.ruled_statuses and _is_text(resp.content_type):
            try:
                document = _json_document(await resp.content.read(_BODY_READ_LIMIT))
            except (aiohttp.ClientError, OSError):
                document = None  # a rule with a pointer finds nothing in it
        elif resp.status >= 500 and _is_text(resp.content_type):
            try:
                raw = await resp.content.read(_BODY_READ_LIMIT)
            except (aiohttp.ClientError, OSError):
                raw = b""  # the status alone is the answer
            snippet = self._snippet(raw, resp.charset)
        server = resp.headers.get("Server")
        return HttpAnswer(
            status=resp.status,
            label=label,
            server=printable(_scrub(server, self.credentials.sensitive)) if server else None,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            snippet=snippet,
            document=document,
            oversized=oversized,
        )

    def _snippet(self, raw: bytes, charset: str | None) -> str:
        """The start of an error body, fit for a one-line message."""
        try:
            text = raw[:_BODY_READ_LIMIT].decode(charset or "utf-8", errors="replace")
        except LookupError:
            text = raw[:_BODY_READ_LIMIT].decode("utf-8", errors="replace")
        return printable(_scrub(text, self.credentials.sensitive), SNIPPET_CHARS)

    def _ruled(self, response: HttpAnswer) -> DriverError | None:
        """The error the connector's first matching rule gives this answer, if any."""
        for rule in self.error_rules:
            if response.status not in rule.status:
                continue
            said = ""
            if rule.pointer is not None:
                found = json_pointer(response.document, rule.pointer)
                if not isinstance(found, str) or found not in rule.values:
                    continue
                said = f" ({rule.pointer} is {printable(found, 128)!r})"
            reason = Reason(rule.reason)
            error = self.fail(
                reason,
                f"{response.label}: HTTP {response.status}{said}, {reason} by the "
                "connector's rules",
            )
            if reason == Reason.RATE_LIMITED:
                error.retry_after = response.retry_after
            return error
        return None

    def rate_limited(self, label: str, retry_after: float | None) -> DriverError:
        message = f"{label}: HTTP 429, rate limited"
        if retry_after is not None:
            message += f"; retry after {retry_after:.0f}s"
        error = self.fail(Reason.RATE_LIMITED, message)
        error.retry_after = retry_after
        return error

    async def request(self, spec: HttpRequestSpec) -> HttpAnswer:
        """Send, and raise a DriverError for any status not in spec.expect_status."""
        response = await self.send(spec)
        if response.status in spec.expect_status:
            return response
        raise self.error_for(response, spec.expect_status)

    def error_for(self, response: HttpAnswer, expected: Collection[int]) -> DriverError:
        """What an answer with a status other than the expected ones means: the
        connector's rules decide first, then the status."""
        ruled = self._ruled(response)
        if ruled is not None:
            return ruled
        status, label = response.status, response.label
        if status == 401:
            return self.fail(
                Reason.AUTHENTICATION_FAILED,
                f"{label}: HTTP 401, the server rejected the credentials",
            )
        if status == 403:
            return self.fail(
                Reason.PERMISSION_DENIED, f"{label}: HTTP 403, the credentials lack permission"
            )
        if status == 404:
            return self.fail(Reason.RESOURCE_NOT_FOUND, f"{label}: HTTP 404, not found")
        if status == 429:
            return self.rate_limited(label, response.retry_after)
        if 500 <= status <= 599:
            message = f"{label}: HTTP {status} from server"
            if response.snippet:
                message += f": {response.snippet}"
            return self.fail(Reason.PROVIDER_ERROR, message, retryable=True)
        wanted = ", ".join(str(s) for s in expected)
        return self.fail(
            Reason.PROTOCOL_ERROR, f"{label}: unexpected HTTP {status} (expected {wanted})"
        )

    async def check(self, check: CheckSpec) -> str:
        """An http capability check: its request answered with an expected status."""
        if check.http is None:
            raise DriverError(Reason.CONFIG_INVALID, "an http check needs http")
        response = await self.request(check.http)
        return f"HTTP {response.status}"

    async def authorize(self, grant: _TokenGrant) -> None:
        """Exchange the grant for an access token, which later requests carry as the
        grant says (a Bearer token unless the connector names another place).

        The access token is never kept beyond this verification. A new refresh
        token in the answer (rotation: the old one may be spent) goes to the
        request's ``issued``, for the caller to keep.
        """
        url = self.token_url(grant.token_url)
        first = label = f"POST {safe_url(url)}"
        form = dict(grant.form)
        if grant.assertion is not None:
            form["client_assertion"] = signed = await self._signed(grant.assertion, url)
            # replayable until it expires: as secret as the key while it lives
            self.credentials = replace(
                self.credentials, sensitive=(*self.credentials.sensitive, signed)
            )
        headers: CIMultiDict[str] = CIMultiDict(
            {
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
                **grant.headers,
            }
        )
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self._open(
                "POST",
                url,
                headers,
                with_credentials=True,
                label=label,
                data=urlencode(form).encode(),
            )
            location = resp.headers.get("Location")
            if not (grant.follow_redirects and resp.status in (307, 308) and location):
                break
            resp.release()
            try:
                target = resp.url.join(URL(location))
            except ValueError:
                raise self.fail(
                    Reason.PROTOCOL_ERROR, f"{label}: redirect to an invalid URL"
                ) from None
            if target.scheme != url.scheme:
                raise self.fail(
                    Reason.PROTOCOL_ERROR,
                    f"{label}: redirected to {target.scheme}, not followed with the grant",
                )
            # the connector's egress hosts decide, when it is opened, whether it may be
            url = target
            label = f"{first} (redirected to {safe_url(url)})"
        else:
            raise self.fail(Reason.PROTOCOL_ERROR, f"{first}: more than {MAX_REDIRECTS} redirects")
        try:
            with self._classified(label):
                body = await _read_capped(resp, _TOKEN_RESPONSE_LIMIT)
        finally:
            resp.release()
        status = resp.status
        if status == 429:
            raise self.rate_limited(label, parse_retry_after(resp.headers.get("Retry-After")))
        answer = _json_object(body)
        if 200 <= status <= 299:
            if answer is None:
                problem = "is not a JSON object" if body is not None else "is too large"
                raise self.fail(
                    Reason.PROTOCOL_ERROR, f"{label}: HTTP {status}, but the answer {problem}"
                )
            token = answer.get("access_token")
            if not isinstance(token, str) or not token or not _is_token_text(token):
                raise self.fail(
                    Reason.PROTOCOL_ERROR, f"{label}: the token response has no usable access_token"
                )
            token_type = answer.get("token_type")
            if isinstance(token_type, str) and token_type.lower() != "bearer":
                raise self.fail(
                    Reason.PROTOCOL_ERROR,
                    f"{label}: token type {printable(token_type, 32)!r} is not "
                    "supported, only Bearer",
                )
            rotated = answer.get("refresh_token")
            given = grant.form.get("refresh_token")
            if given and isinstance(rotated, str) and rotated and rotated != given:
                self.issued["refreshToken"] = rotated
            if self.granted is not None:
                self.granted.update(_granted(token, answer.get("expires_in")))
            self.credentials = _placed(
                grant.access_token,
                token,
                (*self.credentials.sensitive, *([rotated] if isinstance(rotated, str) else [])),
            )
            return
        if 300 <= status <= 399:
            raise self.fail(
                Reason.PROTOCOL_ERROR,
                f"{label}: HTTP {status}; a token endpoint that redirects is not followed, "
                "set tokenUrl to the final address",
            )
        raise self._token_error(label, status, answer)

    async def _signed(self, assertion: _AssertionSpec, token_url: URL) -> str:
        """The client assertion for this token request, its audience the token URL."""
        settings = assertion.settings
        key_id = settings.key_id
        if key_id:
            key_id = _fill_placeholders(key_id, self.config, "clientAssertion.keyId")
        claims = AssertionClaims(assertion.client_id, str(token_url), key_id, assertion.scope)
        try:
            return await run_cpu(
                client_assertion,
                assertion.private_key,
                settings.algorithm,
                claims,
                int(time.time()),
            )
        except AssertionKeyError as exc:
            raise DriverError(Reason.CONFIG_INVALID, f"variable privateKey {exc}") from None

    def _token_error(
        self, label: str, status: int, answer: Mapping[str, object] | None
    ) -> DriverError:
        """RFC 6749 5.2: the error code decides; the status where the answer has none."""
        error = answer.get("error") if answer is not None else None
        description = answer.get("error_description") if answer is not None else None
        said = f"HTTP {status}"
        if isinstance(error, str):
            said += f" {printable(error, 64)}"
            if isinstance(description, str) and description.strip():
                said += f": {printable(description, SNIPPET_CHARS)}"
        if 500 <= status <= 599:
            return self.fail(
                Reason.PROVIDER_ERROR,
                f"{label}: the token endpoint failed ({said})",
                retryable=True,
            )
        if isinstance(error, str) and error in _TOKEN_ERRORS:
            code, meaning = _TOKEN_ERRORS[error]
        elif status == 401:
            code, meaning = Reason.AUTHENTICATION_FAILED, "the client credentials were rejected"
        elif status == 403:
            code, meaning = Reason.PERMISSION_DENIED, "the token request was forbidden"
        elif status == 404:
            code, meaning = Reason.RESOURCE_NOT_FOUND, "no token endpoint at this URL"
        elif isinstance(error, str):
            code, meaning = Reason.PROTOCOL_ERROR, "the token endpoint answered an unknown error"
        else:
            code, meaning = Reason.PROTOCOL_ERROR, "the answer is not an OAuth 2.0 error response"
        return self.fail(code, f"{label}: {meaning} ({said})")


def _granted(token: str, expires_in: object) -> dict[str, str]:
    """The access token for the binding, with its expiry when the answer gives a sane one."""
    granted = {ACCESS_TOKEN_KEY: token}
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # some endpoints send the number as a string
    if isinstance(expires_in, int | float) and 0 < expires_in <= _LONGEST_TOKEN_LIFETIME:
        # the request took some of it: counting from now errs on the early side only slightly
        expires = datetime.now(UTC) + timedelta(seconds=int(expires_in))
        granted[EXPIRES_AT_KEY] = expires.strftime(EXPIRES_AT_FORMAT)
    return granted


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than limit."""
    body = bytearray()
    while chunk := await resp.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def json_pointer(document: object, pointer: str) -> object:
    """What an RFC 6901 pointer names in a JSON document; None where it names nothing."""
    found = document
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(found, dict):
            found = found.get(key)
        elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
            found = found[int(key)]
        else:
            return None
    return found


def _json_document(body: bytes | None) -> object:
    """The JSON value of a body; None when there is none or it is not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _json_object(body: bytes | None) -> dict[str, object] | None:
    value = _json_document(body)
    return value if isinstance(value, dict) else None


def _is_token_text(token: str) -> bool:
    """RFC 6749 A.12: visible ASCII and space; anything else cannot go in a header."""
    return all(" " <= c <= "~" for c in token)


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


@asynccontextmanager
async def http_session(
    request: VerifyRequest,
    egress: Egress,
    *,
    before_request: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Exchange]:
    """An exchange with the Connection's base URL, credentials and TLS material in one
    egress session. With an OAuth 2.0 grant it holds no access token yet: ``authorize``
    its ``grant`` first. ``before_request`` is awaited before every request."""
    base = _base_url(request)
    grant = _token_grant(request) if request.auth.type in OAUTH2_GRANTS else None
    # Until the token endpoint answers, only the grant's values need scrubbing.
    credentials = (
        _Credentials(headers={}, query={}, sensitive=grant.sensitive)
        if grant is not None
        else _credentials(request)
    )
    tls = _tls_material(request)
    tls_contexts = _TlsContexts()
    if tls is not None and (tls.ca_pem or tls.client_cert_pem or tls.client_key_pem):
        tls_contexts = await run_cpu(_tls_contexts, tls)
    async with egress_session(egress) as session:
        yield Exchange(
            session,
            egress,
            base,
            _public_config(request),
            credentials,
            tls_contexts,
            tls.server_name if tls else None,
            request.issued,
            request.http_errors,
            request.granted if request.keep_access_token else None,
            grant,
            before_request,
        )


class HttpDriver:
    """Verifies HTTP APIs with none, basic, bearer, API-key, OAuth 2.0 (client
    credentials or refresh token) or TLS client-certificate authentication."""

    name = "http"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        deadline = Deadline(request.timeout_seconds)
        # Without a configured request, GET the base URL itself.
        spec = request.http or HttpRequestSpec.model_construct(
            method="GET", path="", expect_status=[200], headers={}
        )
        async with http_session(request, egress) as exchange:
            unchecked = spec.credentials_required and (
                (await exchange.send(spec, with_credentials=False)).status in spec.expect_status
            )
            if exchange.grant is not None:
                await exchange.authorize(exchange.grant)
            started = time.monotonic()
            response = await exchange.request(spec)
            latency_ms = round((time.monotonic() - started) * 1000)
            results = await run_checks(self.name, request, {"http": exchange.check}, deadline)
        outcome = results.outcome(server_version=response.server, latency_ms=latency_ms)
        if unchecked and outcome.code == Reason.VERIFIED:
            return replace(
                outcome,
                code=Reason.CREDENTIALS_NOT_REQUIRED,
                message=f"{response.label} answers HTTP {response.status} without credentials "
                "too: the server does not check them",
            )
        return outcome


DRIVER = DriverInfo(
    name=HttpDriver.name,
    binding_type="http",
    default_port=None,  # the base URL says
    capabilities=frozenset({"verify"}),
    factory=HttpDriver,
    binding_uri="baseUrl",
)
