"""Run a throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

The server listens on 127.0.0.1 only, uses SCRAM password authentication and a
generated superuser password, and runs as an unprivileged user when we are root
(initdb and postgres refuse to run as root)::

    server = start_postgres(tmp_path)
    execute(server, "create role app login password 'secret'")
    ...
    server.stop()
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from localserver import SERVER_USER, free_port, server_base_dir, tail, write_private
from testprograms import find_program

START_TIMEOUT = 60


class PostgresError(RuntimeError):
    """The server could not be initialized or started."""


@dataclass
class PostgresServer:
    port: int
    superuser: str
    superuser_password: str = field(repr=False)
    datadir: Path
    bin_dir: Path
    # Directory we created outside the caller's workdir (root only), removed by stop().
    private_dir: Path | None = None
    host: str = "127.0.0.1"

    @property
    def log_path(self) -> Path:
        """The server log (authentication failures are logged there by default)."""
        return self.datadir.parent / "postgres.log"

    def stop(self) -> None:
        """Stop immediately (the data is throwaway); safe to call twice."""
        if (self.datadir / "postmaster.pid").exists():
            _run(self.bin_dir, "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.datadir))
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)


def find_bin_dir() -> Path:
    """The bin directory of the newest installed PostgreSQL version, with all its tools."""
    bin_dir = Path(find_program("initdb")).parent
    for tool in ("pg_ctl", "postgres"):
        find_program(tool, within=bin_dir)
    return bin_dir


def _run(bin_dir: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as SERVER_USER when we are root."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        prefix = [find_program("runuser"), "-u", SERVER_USER, "--"]
    return subprocess.run(
        [*prefix, find_program(tool, within=bin_dir), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def start_postgres(workdir: Path) -> PostgresServer:
    """initdb and start a server on a free loopback port; returns when it accepts connections."""
    bin_dir = find_bin_dir()
    base, private_dir = server_base_dir(workdir, "patchbay-postgres-")
    server = PostgresServer(
        port=free_port(),
        superuser="postgres",
        superuser_password=secrets.token_urlsafe(24),
        datadir=base / "data",
        bin_dir=bin_dir,
        private_dir=private_dir,
    )
    log = base / "postgres.log"
    pwfile = base / "pwfile"
    try:
        write_private(pwfile, server.superuser_password + "\n")
        init = _run(
            bin_dir, "initdb", "-D", str(server.datadir), "-U", server.superuser,
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise PostgresError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = (
            f"-c listen_addresses={server.host} -c port={server.port} "
            f"-c unix_socket_directories={base} -c fsync=off -c full_page_writes=off"
        )
        start = _run(
            bin_dir, "pg_ctl", "start", "-D", str(server.datadir), "-l", str(log),
            "-w", "-t", str(START_TIMEOUT), "-o", options,
        )  # fmt: skip
        if start.returncode != 0:
            raise PostgresError(
                f"postgres did not start:\n{start.stdout}{start.stderr}\nlog tail:\n{tail(log)}"
            )
        # pg_ctl -w already waited; a real login proves the TCP listener and the password.
        execute(server, "select 1")
    except BaseException:
        server.stop()
        raise
    return server


def _connect(
    server: PostgresServer, dbname: str, sslmode: str = "disable"
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.superuser,
        password=server.superuser_password,
        dbname=dbname,
        sslmode=sslmode,
        autocommit=True,
        connect_timeout=10,
    )


def execute(server: PostgresServer, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    """Run SQL as the superuser in autocommit mode (CREATE DATABASE needs it); the rows
    of the last statement, if it returned any.

    Several statements in one call run in one implicit transaction, so CREATE DATABASE
    must be sent on its own.
    """
    with _connect(server, dbname) as conn:
        cursor = conn.execute(sql.encode())
        return cursor.fetchall() if cursor.description else []


def enable_ssl(server: PostgresServer, cert_pem: str, key_pem: str) -> None:
    """Serve TLS with this certificate from now on (plain connections stay allowed)."""
    for name, pem in (("server.crt", cert_pem), ("server.key", key_pem)):
        (server.datadir / name).unlink(missing_ok=True)
        write_private(server.datadir / name, pem)
    execute(server, "alter system set ssl = on")
    execute(server, "select pg_reload_conf()")
    # The reload is asynchronous: wait until new connections get TLS.
    deadline = time.monotonic() + 10
    while True:
        try:
            with _connect(server, "postgres", sslmode="require"):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
