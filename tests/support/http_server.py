"""Local HTTP(S) servers for tests, served on loopback only.

- ``serve``: an aiohttp server on the test's own event loop;
  ``serve_in_thread``: the same on a background thread, for an operator
  running in another process.
- ``serve_silence``: a listener that never answers.
- ``TokenApi``: an API that accepts one bearer token.
- ``OAuth2Server``: an OAuth 2.0 token endpoint and an API that accepts only
  the access tokens it issued.
- ``CertificateAuthority``: certificates for HTTPS servers and clients;
  ``serve_mutual_tls``: an HTTPS server that requires a client certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import testpki

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """What a test server received."""

    requests: list[web.Request] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)


@asynccontextmanager
async def serve(
    routes: Mapping[str, Handler],
    *,
    host: str = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[str, Seen]]:
    """An aiohttp server answering any method on the given paths; yields its base URL."""
    seen = Seen()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.requests.append(request)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    async with serve_app(app, host=host, ssl_context=ssl_context) as origin:
        yield origin, seen


@asynccontextmanager
async def serve_app(
    app: web.Application, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """An aiohttp application on a free port of ``host``; yields its origin."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://{host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_silence() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A listener that accepts connections and never answers; yields its base URL
    and an event that is set once the client has closed its connection."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes away
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", closed
    finally:
        server.close()
        await server.wait_closed()


@contextmanager
def serve_in_thread(
    routes: Mapping[str, Handler], *, host: str = "127.0.0.1"
) -> Iterator[tuple[str, Seen]]:
    """``serve`` on its own event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = serve(routes, host=host)
    try:
        yield asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def answer(
    status: int = 200, text: str = "ok", headers: Mapping[str, str] | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return handler


@dataclass
class TokenApi:
    """Answers 200 to `Authorization: Bearer <token>` and 401 to anything else."""

    token: str
    base_url: str = ""
    requests: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @property
    def authenticated(self) -> list[str]:
        """The Authorization headers of the requests that had one: a verification's own
        request, without the probe that checks the API refuses requests without it."""
        return [header for header in self.requests if header]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers.get("Authorization", ""))
        self.paths.append(request.path)
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return web.json_response({"ok": True}, headers={"Server": "token-api/1.0"})
        return web.json_response({"error": "invalid token"}, status=401)


@contextmanager
def serve_token_api(token: str, host: str = "127.0.0.1") -> Iterator[TokenApi]:
    api = TokenApi(token=token)
    with serve_in_thread({"/{tail:.*}": api.handle}, host=host) as (url, _):
        api.base_url = url
        yield api


JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class AssertionVerifier:
    """What a token endpoint checks in a client assertion (RFC 7523 sections 2.2 and 3):
    the signature with the public key registered under its kid, the issuer, the
    audience, an expiry within the hour, and a jti never seen before."""

    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    key_id: str
    seen_jti: set[str] = field(default_factory=set)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def claims(self, form: Mapping[str, str], client_id: str, audience: str) -> bool:
        if form.get("client_assertion_type") != JWT_BEARER:
            return False
        try:
            head, body, signature = form.get("client_assertion", "").split(".")
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(body))
            self._check_signature(header["alg"], f"{head}.{body}".encode(), _b64decode(signature))
        except (ValueError, KeyError, InvalidSignature):
            return False
        now = time.time()
        valid = (
            header.get("kid") == self.key_id
            and claims.get("iss") == client_id
            and claims.get("aud") == audience
            and claims.get("iat", now + 60) <= now + 5
            and now < claims.get("exp", 0) <= claims["iat"] + 3600
            and isinstance(claims.get("jti"), str)
            and claims["jti"] not in self.seen_jti
        )
        if valid:
            self.seen_jti.add(claims["jti"])
            self.accepted.append({"header": header, "claims": claims})
        return valid

    def _check_signature(self, alg: str, data: bytes, signature: bytes) -> None:
        digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
        key = self.public_key
        if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
            key.verify(der, data, ec.ECDSA(digest))
        elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature, data, padding.PSS(padding.MGF1(digest), digest.digest_size), digest
            )
        else:
            raise InvalidSignature


def _oauth2_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


@dataclass
class OAuth2Server:
    """An OAuth 2.0 token endpoint (RFC 6749: client credentials and refresh token
    grants, client authentication in the body or by HTTP basic) and an API that
    accepts only the access tokens the endpoint issued, answering as a real
    provider does for good and bad credentials."""

    client_id: str
    client_secret: str
    refresh_token: str = ""
    allowed_scopes: frozenset[str] = frozenset()
    # Issue a new refresh token with every access token, and retire the old one.
    rotate_refresh_token: bool = False
    # When set, the token endpoint answers 429 with this Retry-After.
    retry_after: str | None = None
    # When set, clients authenticate with a signed assertion instead of the secret.
    assertion: AssertionVerifier | None = None
    # The expires_in of the access tokens it issues (None: not said); unavailable: 503.
    token_lifetime: int | str | None = 3600
    unavailable: bool = False
    token_forms: list[dict[str, str]] = field(default_factory=list)
    token_auth_headers: list[str] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    api_auth_headers: list[str] = field(default_factory=list)

    def routes(
        self, token_path: str = "/oauth/token", api_path: str = "/v1/me"
    ) -> dict[str, Handler]:
        return {token_path: self.token, api_path: self.api}

    def _client(self, request: web.Request, form: Mapping[str, str]) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote_plus(user), unquote_plus(password)
        return form.get("client_id", ""), form.get("client_secret", "")

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_forms.append(form)
        self.token_auth_headers.append(request.headers.get("Authorization", ""))
        if self.retry_after is not None:
            return web.json_response(
                {"error": "slow_down"}, status=429, headers={"Retry-After": self.retry_after}
            )
        if self.unavailable:
            return _oauth2_error(503, "temporarily_unavailable", "Try again later.")
        if self.assertion is not None:
            token_url = str(request.url.with_query(None))
            authenticated = self.assertion.claims(form, self.client_id, token_url)
        else:
            authenticated = self._client(request, form) == (self.client_id, self.client_secret)
        if not authenticated:
            return _oauth2_error(401, "invalid_client", "Client authentication failed.")
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            if not self.refresh_token or form.get("refresh_token") != self.refresh_token:
                return _oauth2_error(400, "invalid_grant", "The refresh token has expired.")
        elif grant_type != "client_credentials":
            return _oauth2_error(400, "unsupported_grant_type", f"{grant_type} is not supported.")
        requested = set(form.get("scope", "").split())
        if not requested <= self.allowed_scopes:
            return _oauth2_error(400, "invalid_scope", "The scope is not allowed for this client.")
        access_token = f"at-{uuid.uuid4().hex}"
        self.issued.append(access_token)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
        }
        if self.token_lifetime is not None:
            body["expires_in"] = self.token_lifetime
        if self.rotate_refresh_token and grant_type == "refresh_token":
            self.refresh_token = body["refresh_token"] = f"rt-{uuid.uuid4().hex}"
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def api(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        self.api_auth_headers.append(header)
        if header.startswith("Bearer ") and header[7:] in self.issued:
            return web.json_response({"id": "me"}, headers={"Server": "oauth2-api/1.0"})
        return web.json_response(
            {"error": "invalid_token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


# --- certificates and mutual TLS ---------------------------------------------------


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: str
    key_pem: str = field(repr=False)


class CertificateAuthority:
    """A CA made up for one test, issuing server certificates for the loopback
    addresses and client certificates."""

    def __init__(self, name: str) -> None:
        self._ca = testpki.CertificateAuthority.create(name, days=1)
        self.cert_pem = self._ca.cert_text

    def issue_server(self) -> IssuedCertificate:
        return IssuedCertificate(*self._ca.leaf_text("patchbay-test-server", "127.0.0.2"))

    def issue_client(self, common_name: str) -> IssuedCertificate:
        return IssuedCertificate(*self._ca.leaf_text(common_name, server=False))

    def server_context(self, *, client_ca: CertificateAuthority | None = None) -> ssl.SSLContext:
        """A server context with a fresh certificate from this CA; with client_ca,
        a client certificate from that CA is required."""
        issued = self.issue_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl loads a key only from a file.
        with tempfile.TemporaryDirectory(prefix="patchbay-test-tls-") as directory:
            cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
            cert_path.write_text(issued.cert_pem)
            key_path.write_text(issued.key_pem)
            context.load_cert_chain(cert_path, key_path)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca.cert_pem)
        return context


@dataclass
class MutualTlsServer:
    base_url: str = ""
    # Common names of the client certificates that reached the HTTP layer.
    clients: list[str] = field(default_factory=list)


class _MutualTlsHttpServer(ThreadingHTTPServer):
    """Runs the TLS handshake per connection, so that a refused client certificate
    gets its TLS alert to the client the way production servers deliver it."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, record: MutualTlsServer) -> None:
        self.context = context
        self.record = record
        super().__init__(("127.0.0.1", 0), _MutualTlsHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.context.wrap_socket(
            request, server_side=True, do_handshake_on_connect=False
        ) as tls:
            tls.settimeout(10)
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError):
                # The alert is sent; read what the client already sent (its
                # request, in TLS 1.3) until it hangs up, so that closing does not
                # reset the connection before the client has read the alert.
                try:
                    while socket.socket.recv(tls, 65536):
                        pass
                except OSError:
                    pass
                return
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused client is the point of the test, not an error


class _MutualTlsHandler(BaseHTTPRequestHandler):
    server: _MutualTlsHttpServer

    def do_GET(self) -> None:
        assert isinstance(self.connection, ssl.SSLSocket)
        peer = self.connection.getpeercert() or {}
        subject = dict(pair[0] for pair in peer.get("subject", ()))
        self.server.record.clients.append(str(subject.get("commonName", "")))
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_mutual_tls(
    server_ca: CertificateAuthority, client_ca: CertificateAuthority
) -> Iterator[MutualTlsServer]:
    """An HTTPS server on 127.0.0.1 that answers 200 to any GET from a client
    presenting a certificate issued by client_ca, and refuses the TLS
    handshake of every other client."""
    record = MutualTlsServer()
    server = _MutualTlsHttpServer(server_ca.server_context(client_ca=client_ca), record)
    record.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
