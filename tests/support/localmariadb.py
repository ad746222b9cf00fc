"""Run a throwaway MariaDB server for tests, from Debian's ``mariadb-server-core`` package.

The server listens on 127.0.0.1 only, on a free port, with an administrator
account (generated password) that may log in from 127.0.0.1. It runs as an
unprivileged user when we are root (``--user``), writes every login attempt to
its general query log, and optionally serves TLS::

    server = start_mariadb(tmp_path)
    execute(server, "create user app identified by 'secret'")
    server.login_attempts("app")
    server.stop()
"""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from localserver import (
    SERVER_USER,
    free_port,
    running_as_root,
    server_base_dir,
    tail,
    write_private,
)
from testprograms import find_program

START_TIMEOUT = 60
STOP_TIMEOUT = 30
# Small enough for a shared test machine.
_SERVER_OPTIONS = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=16M",
    "--performance-schema=OFF",
    "--skip-log-bin",
    "--skip-name-resolve",
)


class MariadbError(RuntimeError):
    """The server could not be initialized or started."""


@dataclass(frozen=True)
class ServerTls:
    """PEM material the server presents; ``require`` refuses unencrypted connections."""

    cert_pem: str
    key_pem: str = field(repr=False)
    ca_pem: str
    require: bool = False


@dataclass
class MariadbServer:
    port: int
    admin_user: str
    admin_password: str = field(repr=False)
    base: Path
    process: subprocess.Popen[bytes] | None = None
    tls: ServerTls | None = None
    # Directory we created outside the caller's workdir (root only), removed by stop().
    private_dir: Path | None = None
    host: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def error_log_path(self) -> Path:
        """Startup messages, and a warning for every refused login ("Access denied ...")."""
        return self.base / "error.log"

    @property
    def general_log_path(self) -> Path:
        """Every statement and every login attempt, successful or not."""
        return self.base / "general.log"

    def login_attempts(self, user: str) -> int:
        """How many times ``user`` tried to log in (each logs one "Connect" line)."""
        text = self.general_log_path.read_text(errors="replace")
        return len(re.findall(rf"\sConnect\t{re.escape(user)}@", text))

    def refused_logins(self, user: str) -> int:
        """How many logins as ``user`` the server refused for a bad password."""
        text = self.error_log_path.read_text(errors="replace")
        return text.count(f"Access denied for user '{user}'@")

    def stop(self) -> None:
        """Shut down (SIGTERM, then SIGKILL if it hangs); safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def _user_options() -> list[str]:
    return [f"--user={SERVER_USER}"] if running_as_root() else []


def _initialize(server: MariadbServer) -> None:
    """Create the system tables and the administrator account (mariadbd --bootstrap)."""
    install_db = find_program("mariadb-install-db")
    # It runs these from fixed places and fails obscurely without them; my_print_defaults
    # comes from another package (mariadb-client-core).
    for helper in ("my_print_defaults", "resolveip", "mariadbd"):
        find_program(helper)
    bootstrap = server.base / "bootstrap.sql"
    # Bootstrap mode skips the grant tables until FLUSH PRIVILEGES; one statement a line.
    write_private(
        bootstrap,
        "FLUSH PRIVILEGES;\n"
        f"CREATE USER '{server.admin_user}'@'127.0.0.1' "
        f"IDENTIFIED BY '{server.admin_password}';\n"
        f"GRANT ALL ON *.* TO '{server.admin_user}'@'127.0.0.1' WITH GRANT OPTION;\n",
    )
    try:
        init = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={server.datadir}",
                *_user_options(),
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
                f"--extra-file={bootstrap}",
                *_SERVER_OPTIONS,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        bootstrap.unlink(missing_ok=True)
    if init.returncode != 0:
        raise MariadbError(f"mariadb-install-db failed:\n{init.stdout}\n{init.stderr}")


def _tls_options(server: MariadbServer) -> list[str]:
    if server.tls is None:
        return []
    paths = {name: server.base / f"{name}.pem" for name in ("cert", "key", "ca")}
    write_private(paths["cert"], server.tls.cert_pem)
    write_private(paths["key"], server.tls.key_pem)
    write_private(paths["ca"], server.tls.ca_pem)
    options = [
        f"--ssl-cert={paths['cert']}",
        f"--ssl-key={paths['key']}",
        f"--ssl-ca={paths['ca']}",
    ]
    if server.tls.require:
        options.append("--require-secure-transport=ON")
    return options


def _wait_until_ready(server: MariadbServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise MariadbError(f"mariadbd exited:\n{tail(server.error_log_path)}")
        try:
            # A real login proves the TCP listener and the administrator's password.
            execute(server, "SELECT 1")
            return
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise MariadbError(
                    f"mariadbd did not accept logins:\n{tail(server.error_log_path)}"
                ) from None
            time.sleep(0.2)


def start_mariadb(workdir: Path, tls: ServerTls | None = None) -> MariadbServer:
    """Initialize and start a server on a free loopback port; returns once logins work."""
    base, private_dir = server_base_dir(workdir, "patchbay-mariadb-")
    server = MariadbServer(
        port=free_port(),
        admin_user="admin",
        admin_password=secrets.token_urlsafe(24),
        base=base,
        tls=tls,
        private_dir=private_dir,
    )
    try:
        _initialize(server)
        server.process = subprocess.Popen(
            [
                find_program("mariadbd"),
                "--no-defaults",
                *_user_options(),
                f"--datadir={server.datadir}",
                f"--bind-address={server.host}",
                f"--port={server.port}",
                f"--socket={base / 'mariadbd.sock'}",
                f"--pid-file={base / 'mariadbd.pid'}",
                f"--log-error={server.error_log_path}",
                "--general-log=ON",
                f"--general-log-file={server.general_log_path}",
                *_SERVER_OPTIONS,
                *_tls_options(server),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _admin_tls(server: MariadbServer) -> ssl.SSLContext | None:
    if server.tls is None:
        return None
    context = ssl.create_default_context(cadata=server.tls.ca_pem)
    context.check_hostname = False  # the certificate names the test host, we dial 127.0.0.1
    return context


def execute(server: MariadbServer, sql: str) -> list[tuple[object, ...]]:
    """Run one statement as the administrator (autocommit); returns its rows."""
    with (
        pymysql.connect(
            host=server.host,
            port=server.port,
            user=server.admin_user,
            password=server.admin_password,
            ssl=_admin_tls(server),
            autocommit=True,
            connect_timeout=10,
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(sql)
        return list(cursor.fetchall())
