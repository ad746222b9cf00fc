"""Run a throwaway OpenSSH server for tests, from Debian's ``openssh-server`` package.

sshd checks passwords only against the system's own accounts (there is no
way to hand it a password file), so the server gets a dedicated local user,
created with a random name and password and removed again by ``stop()``.
That user may only use SFTP (``ForceCommand internal-sftp``), only on this
server (``AllowUsers``), and its home directory is a private temporary
directory. The server listens on 127.0.0.1 only, with its own host key,
config and pid file, and logs to a file so tests can count login attempts::

    server = start_sshd()
    server.authorize_key(public_key_line)
    ...
    server.stop()

Creating a user needs root, as starting sshd does.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from localserver import free_port, stop_process
from testprograms import find_program

# sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")
USER_PREFIX = "pbsftp"
START_TIMEOUT = 30
STOP_TIMEOUT = 10


class SshdError(RuntimeError):
    """The server could not be configured or started."""


@dataclass
class SshServer:
    port: int
    username: str
    password: str = field(repr=False)
    host_public_key: str
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    @property
    def home(self) -> Path:
        """The test user's home directory, where an SFTP session starts."""
        return self.directory / "home"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def known_hosts(self) -> str:
        """The pinned host key line, in known_hosts format for this host and port."""
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def authorize_key(self, public_key_line: str) -> None:
        """Let the test user log in with this public key (read by sshd at each attempt)."""
        authorized = self.home / ".ssh" / "authorized_keys"
        with authorized.open("a") as f:
            f.write(public_key_line.strip() + "\n")

    def log_count(self, text: str) -> int:
        """How often sshd has logged this text so far."""
        return self.log_path.read_text(errors="replace").count(text)

    def failed_logins(self, method: str = "password") -> int:
        """Failed attempts of one method for the test user, as sshd logged them."""
        return self.log_count(f"Failed {method} for {self.username} from ")

    def stop(self) -> None:
        """Stop the server, remove the user and every file; safe to call twice."""
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
        _remove_user(self.username)
        shutil.rmtree(self.directory, ignore_errors=True)


def generate_key() -> tuple[str, str]:
    """A new Ed25519 key: (private key in OpenSSH format, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def _write(path: Path, text: str, mode: int) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
        f.write(text)


def _run(*args: str, stdin: str | None = None) -> None:
    # useradd and userdel fail while another process holds the passwd lock, and
    # userdel while a session of the user is still winding down: try again.
    argv = [find_program(args[0]), *args[1:]]
    for attempt in range(25):
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        if not any(word in result.stderr for word in ("lock", "currently used")) or attempt == 24:
            raise SshdError(f"{args[0]} failed: {result.stderr.strip()}")
        time.sleep(0.2)


def _remove_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    _run("userdel", name)


def _remove_abandoned_users() -> None:
    """Users of earlier runs that were killed before they could clean up."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(USER_PREFIX) and not Path(entry.pw_dir).exists():
            _remove_user(entry.pw_name)


def _config(server: SshServer) -> str:
    d = server.directory
    return f"""\
ListenAddress {server.host}:{server.port}
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
LogLevel VERBOSE
UsePAM no
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
PermitRootLogin no
AllowUsers {server.username}
MaxAuthTries 6
DisableForwarding yes
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
"""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for_banner(server: SshServer) -> None:
    """Return once sshd answers with its SSH banner."""
    assert server.process is not None
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise SshdError(
                f"sshd exited with {server.process.returncode}:\n{_tail(server.log_path)}"
            )
        try:
            with socket.create_connection((server.host, server.port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SshdError(
                f"sshd did not answer within {START_TIMEOUT}s:\n{_tail(server.log_path)}"
            )
        time.sleep(0.1)


def start_sshd() -> SshServer:
    """Start sshd on a free loopback port; returns once it answers."""
    sshd = find_program("sshd")
    # sshd refuses a user whose login shell does not exist.
    shell = find_program("nologin")
    if os.geteuid() != 0:
        raise SshdError("starting sshd with a test user needs root")
    _remove_abandoned_users()
    # The session runs as the test user, which must reach its home directory:
    # a directory of our own (not the caller's 0700 pytest directory), readable by all.
    directory = Path(tempfile.mkdtemp(prefix="patchbay-sshd-"))
    directory.chmod(0o755)
    host_private, host_public = generate_key()
    server = SshServer(
        port=free_port(),
        username=f"{USER_PREFIX}{secrets.token_hex(4)}",
        password=secrets.token_urlsafe(18),
        host_public_key=host_public,
        directory=directory,
    )
    try:
        _write(directory / "ssh_host_ed25519_key", host_private, 0o600)
        _write(directory / "sshd_config", _config(server), 0o600)
        home = server.home
        _run(
            "useradd", "--no-create-home", "--home-dir", str(home),
            "--shell", shell, "--comment", "patchbay sftp test", server.username,
        )  # fmt: skip
        _run("chpasswd", stdin=f"{server.username}:{server.password}\n")
        entry = pwd.getpwnam(server.username)
        # StrictModes: home and ~/.ssh belong to the user and only the user may write them.
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        (home / ".ssh" / "authorized_keys").touch(mode=0o600)
        for path in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        server.process = subprocess.Popen(
            [sshd, "-D", "-f", str(directory / "sshd_config"), "-E", str(server.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_banner(server)
    except BaseException:
        server.stop()
        raise
    return server
