"""SFTP driver: log in over SSH (asyncssh) against a pinned host key, then check paths over SFTP.

The server's host key must match the connector's ``knownHosts`` variable
(known_hosts format, as ``ssh-keyscan`` prints it) for the configured host
name, so credentials are only ever sent to the server the user pinned. The
connection goes to the address the egress policy approved, while the host
key is looked up by name: the lookup is done here, never against the
address, so an entry for an IP address does not stand in for the name.

Nothing is read from the operator's own ``~/.ssh`` (config, keys, known
hosts) or from an SSH agent; only the one configured method is tried, so a
wrong password costs exactly one failed login on the server.

File browsing (``FileBrowsing``) lists directories relative to ``basePath``
(or the login directory), which is "/": ".." never leads above it. SFTP has no
server-side paging, so a directory is read whole, sorted by name and served in
pages of ``PAGE_SIZE`` entries; the page token names the last entry served, so
the next page starts after it even if the directory changed in between. A
symbolic link to a file is listed as that file; links to directories (which
may lead back up the tree) and to anything else, and broken links, are left
out of listings, though a link's own path can be listed.

An encrypted private key says itself how costly its decryption is: the bcrypt
KDF rounds of an OpenSSH key, the PBKDF2 iterations of an encrypted PKCS#8
key. The driver reads that from the key's envelope before decrypting and
refuses more than ``MAX_BCRYPT_ROUNDS`` rounds or ``MAX_PBKDF2_ITERATIONS``
iterations (ConfigInvalid): decryption runs in a thread of the CPU pool
(``patchbay.workers``), which no timeout can stop once it has started, so the
cap is what bounds it. Legacy PKCS#8 schemes (PBES1, PKCS#12), whose cost is
also set by the key, are refused; ``ssh-keygen -p`` rewrites such a key in the
OpenSSH format. Only the first private key in the text is used, and only in
PEM or OpenSSH text form.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import datetime
import posixpath
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncssh
from asyncssh.asn1 import ASN1DecodeError, ObjectIdentifier, der_decode
from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs
from asyncssh.saslprep import SASLPrepError

from patchbay import __version__
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
    FileKind,
    FilePage,
    SelectionLimits,
    SelectionReport,
    VerifyOutcome,
    VerifyRequest,
    config_port,
    config_text,
    secret_text,
    walk_selection,
)
from patchbay.drivers.checks import CheckFunction, SessionLost, check_subject, run_checks
from patchbay.drivers.text import printable
from patchbay.workers import run_cpu

T = TypeVar("T")

DEFAULT_PORT = 22
# A readObject check proves the file can be read without transferring it.
READ_BYTES = 16
# Entries in one page of a file listing.
PAGE_SIZE = 1000
# The runner's asyncio timeout is the real limit; these only keep asyncssh from giving up first.
LIBRARY_TIMEOUT_SECONDS = 300
CLIENT_VERSION = f"patchbay_{__version__}"
# Key derivation cost a private key may ask for. ssh-keygen's default is 16
# rounds, hardening guides suggest 100 and asyncssh writes 128; each round
# costs a few milliseconds of one core. OpenSSL and asyncssh write PKCS#8 keys
# with 2048 PBKDF2 iterations.
MAX_BCRYPT_ROUNDS = 128
MAX_PBKDF2_ITERATIONS = 600_000
# PBKDF2 work grows with the key length it derives too; AES-256 needs 32 bytes.
_MAX_PBKDF2_KEY_BYTES = 64
_OPENSSH_KEY_V1 = b"openssh-key-v1\0"
_PBES2 = ObjectIdentifier("1.2.840.113549.1.5.13")
_PBKDF2 = ObjectIdentifier("1.2.840.113549.1.5.12")
_NOT_A_KEY = "privateKey is not a valid private key"

TrustedKeys = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]

_BY_SFTP_CODE: dict[int, Reason] = {
    asyncssh.FX_NO_SUCH_FILE: Reason.RESOURCE_NOT_FOUND,
    asyncssh.FX_NO_SUCH_PATH: Reason.RESOURCE_NOT_FOUND,
    asyncssh.FX_NOT_A_DIRECTORY: Reason.RESOURCE_NOT_FOUND,
    asyncssh.FX_PERMISSION_DENIED: Reason.PERMISSION_DENIED,
    asyncssh.FX_WRITE_PROTECT: Reason.PERMISSION_DENIED,
    asyncssh.FX_OP_UNSUPPORTED: Reason.PROTOCOL_ERROR,
    asyncssh.FX_BAD_MESSAGE: Reason.PROTOCOL_ERROR,
}


def _host_key_name(host: str, port: int) -> str:
    """How known_hosts names this server: the host, with the port when it is not 22."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _trusted_keys(request: VerifyRequest, host: str, port: int) -> TrustedKeys:
    """Host keys, CA keys and revoked keys that knownHosts lists for the configured name."""
    text = request.value("knownHosts")
    if not isinstance(text, str) or not text.strip():
        raise DriverError(
            Reason.CONFIG_INVALID,
            "knownHosts is required: the server's host key line(s) in known_hosts format, "
            "as printed by ssh-keyscan",
        )
    try:
        known_hosts = asyncssh.import_known_hosts(text)
    except ValueError:
        raise DriverError(
            Reason.CONFIG_INVALID, "knownHosts is not in known_hosts format"
        ) from None
    # The name only: passing the address would let an entry for the IP vouch for it.
    # OpenSSH compares names case-insensitively; asyncssh's exact entries do not.
    host_keys, ca_keys, revoked, *_ = known_hosts.match(
        host.lower(), "", None if port == DEFAULT_PORT else port
    )
    if not host_keys and not ca_keys:
        raise DriverError(
            Reason.CONFIG_INVALID,
            f"knownHosts has no host key for {_host_key_name(host, port)}",
        )
    return list(host_keys), list(ca_keys), list(revoked)


def _host_key_algorithms(trusted: TrustedKeys) -> list[str]:
    """The pinned key types first, then every other type, as OpenSSH orders them.

    Offered only the pinned types (asyncssh's default), a server without a key
    of those types hangs up during the key exchange, which would look like a
    protocol error; offered all, it presents the key it has, and a mismatch is
    reported as one.
    """
    host_keys, ca_keys, _ = trusted
    certificates = get_default_certificate_algs()
    pinned = [alg for key in host_keys for alg in key.sig_algorithms]
    if ca_keys:
        pinned = certificates + pinned
    ordered = dict.fromkeys(pinned + certificates + get_default_public_key_algs())
    return [alg.decode("ascii") for alg in ordered]


def _ssh_string(data: bytes, offset: int) -> tuple[bytes, int]:
    """An SSH wire-format string at offset, and the offset after it."""
    start = offset + 4
    if start > len(data):
        raise ValueError("truncated")
    end = start + int.from_bytes(data[offset:start], "big")
    if end > len(data):
        raise ValueError("truncated")
    return data[start:end], end


def _bcrypt_rounds(envelope: bytes) -> int | None:
    """The bcrypt KDF rounds an OpenSSH private key asks for; None if it names another KDF."""
    if not envelope.startswith(_OPENSSH_KEY_V1):
        raise ValueError("not an openssh-key-v1 envelope")
    _cipher, offset = _ssh_string(envelope, len(_OPENSSH_KEY_V1))
    kdf, offset = _ssh_string(envelope, offset)
    options, _ = _ssh_string(envelope, offset)
    if kdf != b"bcrypt":
        return None
    _salt, offset = _ssh_string(options, 0)
    if offset + 4 > len(options):
        raise ValueError("truncated")
    return int.from_bytes(options[offset : offset + 4], "big")


def _pbkdf2_cost(der: bytes) -> tuple[int, int | None]:
    """PBKDF2 iterations and explicit key length of an encrypted PKCS#8 key.

    ValueError for a structure asyncssh would not decrypt either; LookupError for
    an encryption scheme other than PBES2 with PBKDF2.
    """
    try:
        info = der_decode(der)
    except ASN1DecodeError:
        raise ValueError("not DER") from None
    match info:
        case ((ObjectIdentifier() as scheme, params), bytes()):
            pass
        case _:
            raise ValueError("not an EncryptedPrivateKeyInfo")
    if scheme != _PBES2:
        raise LookupError("legacy scheme")
    match params:
        case ((ObjectIdentifier() as kdf, (bytes(), int() as iterations, *rest)), tuple()):
            pass
        case _:
            raise ValueError("not PBES2 parameters")
    if kdf != _PBKDF2:
        raise LookupError("unknown KDF")
    key_length = rest[0] if rest and isinstance(rest[0], int) else None
    return iterations, key_length


def _pem_private_key(text: str) -> tuple[str, str, list[str]] | None:
    """The first PEM private key block: its label ("OPENSSH", "RSA", "" ...), BEGIN line, body.

    The block is found as asyncssh finds it, so the key vetted is the key used.
    """
    lines = text.splitlines()
    for index, line in enumerate(lines):
        begin = line.rstrip()
        if begin.startswith("-----BEGIN ") and begin.endswith(" PRIVATE KEY-----"):
            end = "-----END" + begin[len("-----BEGIN") :]
            for stop in range(index + 1, len(lines)):
                if lines[stop].rstrip() == end:
                    label = begin[len("-----BEGIN ") : -len(" PRIVATE KEY-----")].strip()
                    return label, begin, lines[index + 1 : stop]
            return None
    return None


def _vetted_private_key(text: str) -> str:
    """The key text asyncssh may decrypt: one block whose KDF cost is within the caps.

    A block whose cost is read from it is rebuilt from the bytes that were
    checked, so asyncssh decodes exactly those.
    """
    block = _pem_private_key(text)
    if block is None:
        raise DriverError(Reason.CONFIG_INVALID, _NOT_A_KEY)
    label, begin, body = block
    end = "-----END" + begin[len("-----BEGIN") :]
    if label not in ("OPENSSH", "ENCRYPTED"):
        # Unencrypted, or PKCS#1 encryption: one MD5 pass, whatever the key says.
        return "\n".join([begin, *body, end, ""])
    # Header lines (with a colon) say nothing that matters for these two kinds.
    payload = "".join(line.strip() for line in body if ":" not in line)
    error: DriverError | None = None
    try:
        data = binascii.a2b_base64(payload)
        if label == "OPENSSH":
            rounds = _bcrypt_rounds(data)
            if rounds is not None and rounds > MAX_BCRYPT_ROUNDS:
                error = DriverError(
                    Reason.CONFIG_INVALID,
                    f"privateKey asks for {rounds} bcrypt KDF rounds, more than the "
                    f"{MAX_BCRYPT_ROUNDS} accepted: re-encrypt it with ssh-keygen -p -a 16",
                )
        else:
            iterations, key_length = _pbkdf2_cost(data)
            if iterations > MAX_PBKDF2_ITERATIONS or (key_length or 0) > _MAX_PBKDF2_KEY_BYTES:
                error = DriverError(
                    Reason.CONFIG_INVALID,
                    f"privateKey asks for {iterations} PBKDF2 iterations, more than the "
                    f"{MAX_PBKDF2_ITERATIONS} accepted: re-encrypt it with ssh-keygen -p",
                )
    except LookupError:
        error = DriverError(
            Reason.CONFIG_INVALID,
            "privateKey is encrypted with a legacy PKCS#8 scheme the sftp driver does not "
            "decrypt: convert it to the OpenSSH format with ssh-keygen -p",
        )
    except (ValueError, binascii.Error):
        error = DriverError(Reason.CONFIG_INVALID, _NOT_A_KEY)
    if error is not None:  # raised outside the handler: no key bytes ride along
        raise error
    wrapped = base64.encodebytes(data).decode("ascii")
    return f"{begin}\n{wrapped}{end}\n"


def _key_error(exc: ValueError) -> DriverError:
    if isinstance(exc, asyncssh.KeyEncryptionError) or "decrypt" in str(exc):
        message = "privateKey cannot be decrypted with the given passphrase"
    elif "passphrase must be specified" in str(exc).lower():
        message = "privateKey is encrypted: the credentials need a passphrase"
    else:
        message = "privateKey is not a valid private key"
    return DriverError(Reason.CONFIG_INVALID, message)


async def _auth_options(request: VerifyRequest) -> dict[str, object]:
    """asyncssh options for the connector's auth type: one method, nothing from ~/.ssh."""
    auth_type = request.auth.type
    if auth_type == "password":
        return {
            "password": secret_text(request, "password"),
            "preferred_auth": "password",
            "client_keys": None,
        }
    if auth_type == "sshKey":
        pem = _vetted_private_key(secret_text(request, "privateKey"))
        passphrase = request.value("passphrase")
        error: DriverError | None = None
        try:
            # Decrypting a key runs a deliberately slow KDF: not on the event loop.
            key = await run_cpu(
                asyncssh.import_private_key, pem, str(passphrase) if passphrase else None
            )
        except ValueError as exc:  # KeyImportError, KeyEncryptionError
            error = _key_error(exc)
        if error is not None:  # raised outside the handler: no key text rides along
            raise error
        return {"client_keys": [key], "preferred_auth": "publickey"}
    raise DriverError(
        Reason.CONFIG_INVALID,
        f"auth type {auth_type} is not supported by the sftp driver (use password or sshKey)",
    )


def _login_error(
    exc: asyncssh.Error | OSError, name: str, username: str, auth_type: str
) -> DriverError:
    """The reason for a failed connect or login."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return DriverError(
            Reason.TLS_ERROR,
            f"host key mismatch: the key {name} presented is not the one pinned in knownHosts",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        what = "password" if auth_type == "password" else "key"
        return DriverError(
            Reason.AUTHENTICATION_FAILED, f"{name} rejected the {what} for user {username}"
        )
    if isinstance(exc, asyncssh.IllegalUserName):
        return DriverError(Reason.CONFIG_INVALID, "username is not valid for SSH")
    if isinstance(
        exc,
        asyncssh.ConnectionLost | ConnectionResetError | ConnectionAbortedError | BrokenPipeError,
    ):
        # Connected, then dropped before the handshake was done: most often not an SSH server.
        return DriverError(
            Reason.PROTOCOL_ERROR, f"{name} closed the connection during the SSH handshake"
        )
    reason = printable(exc.reason) if isinstance(exc, asyncssh.Error) else ""
    if isinstance(exc, asyncssh.DisconnectError):
        if exc.code == asyncssh.DISC_TOO_MANY_CONNECTIONS:
            return DriverError(Reason.RATE_LIMITED, f"{name}: too many connections")
        if exc.code == asyncssh.DISC_HOST_NOT_ALLOWED_TO_CONNECT:
            return DriverError(Reason.PERMISSION_DENIED, f"{name}: {reason}")
        if exc.code == asyncssh.DISC_BY_APPLICATION:
            return DriverError(Reason.PROVIDER_ERROR, f"{name} disconnected: {reason}")
        # Protocol, key exchange, MAC and compression failures, unsupported versions:
        # the peer does not speak SSH as expected.
        return DriverError(Reason.PROTOCOL_ERROR, f"{name}: {reason}")
    if isinstance(exc, TimeoutError):
        return DriverError(Reason.TIMEOUT, f"{name} did not complete the SSH login in time")
    if isinstance(exc, OSError):
        return DriverError(
            Reason.HOST_UNREACHABLE,
            f"cannot connect to {name}: {exc.strerror or type(exc).__name__}",
        )
    return DriverError(Reason.PROVIDER_ERROR, f"{name}: {reason}")


async def _login(
    address: str,
    host: str,
    port: int,
    username: str,
    trusted: TrustedKeys,
    auth: Mapping[str, object],
    auth_type: str,
) -> asyncssh.SSHClientConnection:
    name = _host_key_name(host, port)
    error: DriverError | None = None
    try:
        return await asyncssh.connect(
            address,
            port,
            username=username,
            known_hosts=trusted,
            server_host_key_algs=_host_key_algorithms(trusted),
            # Host certificates in X.509 form would bypass the lookup above.
            x509_trusted_certs=None,
            # Nothing from the operator's environment: no ~/.ssh/config, agent,
            # PKCS#11 token, GSSAPI ticket or host-based key.
            config=None,
            agent_path=None,
            pkcs11_provider=None,
            gss_auth=False,
            gss_kex=False,
            host_based_auth=False,
            kbdint_auth=False,
            client_version=CLIENT_VERSION,
            connect_timeout=LIBRARY_TIMEOUT_SECONDS,
            login_timeout=LIBRARY_TIMEOUT_SECONDS,
            **auth,
        )
    except (asyncssh.Error, OSError) as exc:
        error = _login_error(exc, name, username, auth_type)
    except SASLPrepError:  # asyncssh normalizes the user name before connecting
        error = DriverError(Reason.CONFIG_INVALID, "username is not valid for SSH")
    except ValueError as exc:  # options asyncssh rejects, e.g. no local user name
        error = DriverError(Reason.PROVIDER_ERROR, f"the SSH client cannot be set up: {exc}")
    # Raised outside the handler so the library's exception does not ride along.
    raise error


async def _abort_on_cancel(conn: asyncssh.SSHClientConnection, work: Coroutine[Any, Any, T]) -> T:
    """Await work; when the caller's timeout cancels us, drop the connection first.

    asyncssh's SFTP helpers close their file handles in ``finally`` blocks, which
    would wait on a hung server after the timeout; with the connection gone
    those waits fail at once.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        conn.abort()
        with contextlib.suppress(Exception):
            await task
        raise


def _sftp_error(exc: asyncssh.SFTPError, path: str) -> DriverError:
    code = _BY_SFTP_CODE.get(exc.code, Reason.PROVIDER_ERROR)
    return DriverError(code, f"{path}: {printable(exc.reason) or type(exc).__name__}")


async def _list_files(sftp: asyncssh.SFTPClient, path: str) -> str:
    # scandir is an async generator, though typed as an iterator.
    entries = cast("AsyncGenerator[asyncssh.SFTPName, None]", sftp.scandir(path))
    # The first entry proves the directory can be listed; reading it all could take long.
    first = await anext(entries, None)
    await entries.aclose()
    return "listed" if first is not None else "listed (empty)"


async def _read_object(sftp: asyncssh.SFTPClient, path: str) -> str:
    handle = await sftp.open(path, "rb")
    attrs = await handle.stat()
    if attrs.permissions is not None and stat.S_ISDIR(attrs.permissions):
        raise DriverError(Reason.RESOURCE_NOT_FOUND, f"{path} is a directory, not a file")
    data = await handle.read(READ_BYTES)
    await handle.close()
    return f"read {len(data)} byte(s)"


async def _sftp_client(conn: asyncssh.SSHClientConnection, base_path: str) -> asyncssh.SFTPClient:
    """Open an SFTP session and make sure the base path is a directory."""
    error: DriverError | None = None
    try:
        sftp = await conn.start_sftp_client()
    except asyncssh.ChannelOpenError as exc:
        code = (
            Reason.PERMISSION_DENIED
            if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
            else Reason.PROTOCOL_ERROR
        )
        error = DriverError(code, f"cannot open an SFTP session: {printable(exc.reason)}")
    except asyncssh.SFTPError as exc:
        error = DriverError(
            Reason.PROTOCOL_ERROR,
            f"the server offers no SFTP service: {printable(exc.reason)}",
        )
    if error is not None:
        raise error
    if base_path:
        try:
            attrs = await sftp.stat(base_path)
        except asyncssh.SFTPError as exc:
            error = _sftp_error(exc, f"basePath {base_path}")
        else:
            if attrs.permissions is not None and not stat.S_ISDIR(attrs.permissions):
                error = DriverError(
                    Reason.RESOURCE_NOT_FOUND, f"basePath {base_path} is not a directory"
                )
        if error is not None:
            raise error
    return sftp


async def _guarded(conn: asyncssh.SSHClientConnection, work: Coroutine[Any, Any, T]) -> T:
    """Await work over the connection; an SFTP error that escapes it means the link is gone."""
    error: SessionLost | None = None
    try:
        return await _abort_on_cancel(conn, work)
    except (asyncssh.SFTPError, asyncssh.DisconnectError) as exc:
        error = SessionLost(
            Reason.PROVIDER_ERROR,
            f"the SSH connection was lost: {printable(exc.reason)}",
        )
    raise error


def _connection_lost(exc: asyncssh.SFTPError) -> bool:
    return isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection)


async def _answered(work: Awaitable[T], path: str) -> T:
    """Await an SFTP request about ``path``; the server's refusal as a classified error.

    A lost connection passes through, for ``_guarded``.
    """
    error: DriverError | None = None
    try:
        return await work
    except asyncssh.SFTPError as exc:
        if _connection_lost(exc):
            raise
        error = _sftp_error(exc, path)
    raise error


@dataclass(frozen=True)
class _Checks:
    """The driver's check functions over one SFTP session; paths start at basePath."""

    conn: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    base_path: str

    def _path(self, check: CheckSpec) -> str:
        path = check_subject(check)
        return posixpath.join(self.base_path, path) if self.base_path else path

    async def list_files(self, check: CheckSpec) -> str:
        path = self._path(check)
        return await _guarded(self.conn, _answered(_list_files(self.sftp, path), path))

    async def read_object(self, check: CheckSpec) -> str:
        path = self._path(check)
        return await _guarded(self.conn, _answered(_read_object(self.sftp, path), path))

    def functions(self) -> dict[CheckType, CheckFunction]:
        return {"listFiles": self.list_files, "readObject": self.read_object}


def _is(kind: int, attrs: asyncssh.SFTPAttrs) -> bool:
    """Whether attrs describe this kind of file (stat.S_IFDIR, ...)."""
    return attrs.permissions is not None and stat.S_IFMT(attrs.permissions) == kind


def _kind(attrs: asyncssh.SFTPAttrs) -> FileKind | None:
    """Directory or file; None for what holds nothing to transfer (sockets, devices, pipes)."""
    if _is(stat.S_IFDIR, attrs):
        return "directory"
    # A server may leave the mode out: then it is taken for a file.
    if attrs.permissions is None or _is(stat.S_IFREG, attrs):
        return "file"
    return None


def _entry(name: str, path: str, kind: FileKind, attrs: asyncssh.SFTPAttrs) -> FileEntry:
    modified = (
        datetime.datetime.fromtimestamp(attrs.mtime, datetime.UTC)
        if attrs.mtime is not None
        else None
    )
    return FileEntry(name, kind, path, attrs.size if kind == "file" else None, modified)


def _page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _after(token: str) -> str:
    """The name of the last entry of the previous page."""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise DriverError(Reason.CONFIG_INVALID, "the page token is not valid") from None


class SftpFileBrowser:
    """FileBrowser over one SFTP session. Paths are written from the root: "/incoming"."""

    def __init__(
        self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, base_path: str
    ) -> None:
        self._conn = conn
        self._sftp = sftp
        self._base_path = base_path
        # Directories read whole whose later pages are still to be asked for, so that a
        # walk through a large directory reads it once.
        self._read: dict[str, list[FileEntry]] = {}

    def _remote(self, path: str) -> tuple[str, str]:
        """The path as shown ("/a/b") and as sent to the server (under basePath)."""
        # normpath on an absolute path drops ".." at the root: nothing above basePath.
        relative = posixpath.normpath("/" + path).lstrip("/")
        if not relative:
            return "/", self._base_path or "."
        return "/" + relative, posixpath.join(self._base_path, relative)

    async def _stat(self, remote: str, shown: str) -> asyncssh.SFTPAttrs:
        return await _answered(self._sftp.stat(remote), shown)  # follows symbolic links

    async def _read_directory(self, remote: str, shown: str) -> list[FileEntry]:
        names = await _answered(self._sftp.readdir(remote), shown)
        entries: list[FileEntry] = []
        for found in names:
            name = str(found.filename)
            if name in (".", ".."):
                continue
            attrs = found.attrs
            if _is(stat.S_IFLNK, attrs):
                try:
                    attrs = await self._sftp.stat(posixpath.join(remote, name))
                except asyncssh.SFTPError as exc:
                    if _connection_lost(exc):
                        raise
                    continue  # a broken link, or one to where the login may not look
                if not _is(stat.S_IFREG, attrs):
                    continue
            kind = _kind(attrs)
            if kind is not None:
                entries.append(_entry(name, posixpath.join(shown, name), kind, attrs))
        entries.sort(key=lambda entry: entry.name)
        return entries

    async def _list(self, path: str, page_token: str | None) -> FilePage:
        shown, remote = self._remote(path)
        after = _after(page_token) if page_token is not None else None
        attrs = await self._stat(remote, shown)
        kind = _kind(attrs)
        if kind == "file":
            # The path as given, so that the caller recognises the file it asked for.
            return FilePage((_entry(posixpath.basename(shown), path, kind, attrs),))
        if kind is None:
            raise DriverError(
                Reason.RESOURCE_NOT_FOUND, f"{shown} is neither a file nor a directory"
            )
        entries = self._read.pop(shown, None) if after is not None else None
        if entries is None:
            entries = await self._read_directory(remote, shown)
        start = 0
        if after is not None:
            start = bisect.bisect_right([entry.name for entry in entries], after)
        page = entries[start : start + PAGE_SIZE]
        if start + PAGE_SIZE >= len(entries):
            return FilePage(tuple(page))
        self._read[shown] = entries
        return FilePage(tuple(page), _page_token(page[-1].name))

    async def list_files(self, path: str, page_token: str | None = None) -> FilePage:
        return await _guarded(self._conn, self._list(path, page_token))

    async def validate_selection(
        self, paths: Sequence[str], limits: SelectionLimits
    ) -> SelectionReport:
        return await walk_selection(self, paths, limits)


def _server_version(conn: asyncssh.SSHClientConnection) -> str | None:
    """The software part of the server's SSH banner, e.g. 'OpenSSH_9.6p1 Ubuntu-3ubuntu13'."""
    banner = conn.get_extra_info("server_version")
    if not isinstance(banner, str):
        return None
    parts = banner.split("-", 2)
    software = parts[2] if len(parts) == 3 and parts[0] == "SSH" else banner
    return printable(software) or None


@contextlib.asynccontextmanager
async def _logged_in(
    request: VerifyRequest, egress: Egress
) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, int]]:
    """A logged-in SSH connection and the login's latency in milliseconds; closed on exit."""
    host, port = config_text(request, "host"), config_port(request, DEFAULT_PORT)
    username = config_text(request, "username")
    trusted = _trusted_keys(request, host, port)
    auth = await _auth_options(request)
    # The policy decides on the address actually used; the host key is still
    # checked for the configured name.
    addresses = await egress.resolve(host, port)
    if not addresses:
        raise DriverError(Reason.HOST_UNREACHABLE, f"{host} has no addresses")
    started = time.monotonic()
    conn = await _login(str(addresses[0]), host, port, username, trusted, auth, request.auth.type)
    latency_ms = round((time.monotonic() - started) * 1000)
    try:
        yield conn, latency_ms
    finally:
        conn.close()  # no waiting: safe after a cancellation


class SftpDriver:
    """Verifies SFTP servers (OpenSSH and others) with password or SSH key authentication."""

    name = "sftp"

    async def verify(self, request: VerifyRequest, egress: Egress) -> VerifyOutcome:
        deadline = Deadline(request.timeout_seconds)
        base_path = config_text(request, "basePath", "")
        async with _logged_in(request, egress) as (conn, latency_ms):
            sftp = await _guarded(conn, _sftp_client(conn, base_path))
            checks = _Checks(conn, sftp, base_path).functions()
            results = await run_checks(self.name, request, checks, deadline)
        return results.outcome(server_version=_server_version(conn), latency_ms=latency_ms)

    @contextlib.asynccontextmanager
    async def browse_files(
        self, request: VerifyRequest, egress: Egress
    ) -> AsyncIterator[FileBrowser]:
        base_path = config_text(request, "basePath", "")
        async with _logged_in(request, egress) as (conn, _):
            sftp = await _guarded(conn, _sftp_client(conn, base_path))
            yield SftpFileBrowser(conn, sftp, base_path)


# Checked by mypy, as factory= below checks the Driver interface: the class can
# browse as its capabilities say.
_files: FileBrowsing = SftpDriver()
DRIVER = DriverInfo(
    name=SftpDriver.name,
    binding_type="sftp",
    default_port=DEFAULT_PORT,
    capabilities=frozenset({"verify", "files"}),
    factory=SftpDriver,
)
