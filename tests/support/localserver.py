"""Helpers shared by the throwaway servers the tests start (localpostgres, localmariadb, locals3).

Servers listen on loopback only. When the tests run as root, a server runs as the
unprivileged SERVER_USER in a private directory of its own, since the caller's
workdir usually sits under a root-only directory that user cannot traverse.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

# Unprivileged account for the servers when we run as root.
SERVER_USER = "nobody"


def running_as_root() -> bool:
    return os.geteuid() == 0


def give_to_server_user(path: Path) -> None:
    if running_as_root():
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def server_base_dir(workdir: Path, prefix: str) -> tuple[Path, Path | None]:
    """Where a server keeps its files, and the private directory to remove afterwards (if any)."""
    if running_as_root():
        private = Path(tempfile.mkdtemp(prefix=prefix))
        give_to_server_user(private)
        return private, private
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, None


def write_private(path: Path, text: str) -> None:
    """A file only its owner (the server user) can read."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(text)
    give_to_server_user(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Stoppable(Protocol):
    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=Stoppable)


@contextlib.contextmanager
def stopping(server: ServerT) -> Iterator[ServerT]:
    """``server``, stopped when the block ends, also when it fails."""
    try:
        yield server
    finally:
        server.stop()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Ask ``process`` to exit, and kill it if it has not within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
