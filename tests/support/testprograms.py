"""The external programs the test helpers run, each with the Debian package that ships it.

This is the one list. ``hack/install-test-deps.sh`` installs exactly its packages
(``python3 tests/support/testprograms.py packages``), and the helpers find every program
through ``find_program``, which refuses a name that is not listed here and, when a
listed program is absent, says which package to install::

    find_program("mariadbd")   # "/usr/sbin/mariadbd"

Programs that a listed program runs in turn are listed too when the test helpers
depend on them (mariadb-install-db stops without my_print_defaults, which comes from
another package than mariadb-install-db itself). The Go programs that hack/build-*.sh
build into the cache (etcd, kube-apiserver, kubectl, helm, MinIO) are not Debian
packages and are not listed here.

tests/unit/test_test_programs.py checks against dpkg's database that each listed
package really ships its programs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from glob import glob
from pathlib import Path

INSTALLER = "hack/install-test-deps.sh"
# Where programs outside an ordinary user's PATH live (sshd, mariadbd, useradd, ...).
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
# One directory per installed PostgreSQL major version; the newest one wins.
POSTGRES_BIN_DIRS = "/usr/lib/postgresql/*/bin"


@dataclass(frozen=True)
class Program:
    name: str
    package: str
    why: str
    # Searched in this order; a pattern with * expands newest version first.
    directories: tuple[str, ...] = SYSTEM_DIRS
    # Whether PATH is searched first (not for programs another program expects at a fixed place).
    on_path: bool = True


PROGRAMS: tuple[Program, ...] = (
    Program("bash", "bash", "localcluster runs hack/build-control-plane.sh"),
    Program("initdb", "postgresql", "localpostgres", (POSTGRES_BIN_DIRS,), on_path=False),
    Program("pg_ctl", "postgresql", "localpostgres", (POSTGRES_BIN_DIRS,), on_path=False),
    Program(
        "postgres", "postgresql", "initdb and pg_ctl run it", (POSTGRES_BIN_DIRS,), on_path=False
    ),
    Program("runuser", "util-linux", "localpostgres drops root privileges with it"),
    Program("mariadb-install-db", "mariadb-server-core", "localmariadb"),
    Program("mariadbd", "mariadb-server-core", "localmariadb"),
    # mariadb-install-db runs these from /usr/bin, whatever PATH says.
    Program(
        "my_print_defaults",
        "mariadb-client-core",
        "mariadb-install-db runs it",
        ("/usr/bin",),
        on_path=False,
    ),
    Program(
        "resolveip",
        "mariadb-server-core",
        "mariadb-install-db runs it",
        ("/usr/bin",),
        on_path=False,
    ),
    Program("sshd", "openssh-server", "localsshd"),
    Program("useradd", "passwd", "localsshd creates the SFTP test user"),
    Program("chpasswd", "passwd", "localsshd sets the test user's password"),
    Program("userdel", "passwd", "localsshd removes the test user"),
    # sshd refuses a user whose login shell does not exist.
    Program("nologin", "login", "the SFTP test user's login shell"),
)

_BY_NAME = {p.name: p for p in PROGRAMS}


class ProgramNotListed(LookupError):
    """A helper asked for a program this module does not list."""


class ProgramNotFound(RuntimeError):
    """A listed program is not installed."""


def program(name: str) -> Program:
    """The listed program of this name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ProgramNotListed(
            f"{name} is not listed in tests/support/testprograms.py: add it with the Debian "
            f"package that ships it, so that {INSTALLER} installs it"
        ) from None


def packages() -> list[str]:
    """Every package of the list, once each, sorted."""
    return sorted({p.package for p in PROGRAMS})


def missing_message(prog: Program, where: Path | None = None) -> str:
    place = f" in {where}" if where is not None else ""
    return (
        f"{prog.name} not found{place}: install the Debian package {prog.package} "
        f"({INSTALLER} does)"
    )


def _version_key(path: str) -> list[tuple[int, int | str]]:
    # "15" sorts after "9": numbers compare as numbers.
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", path)]


def search_dirs(prog: Program) -> list[Path]:
    """The directories searched for ``prog`` after PATH, in order."""
    found: list[Path] = []
    for pattern in prog.directories:
        if "*" in pattern:
            found.extend(Path(p) for p in sorted(glob(pattern), key=_version_key, reverse=True))
        else:
            found.append(Path(pattern))
    return found


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate(prog: Program, within: Path | None = None) -> str:
    """The path of ``prog``: in ``within`` only if given, else on PATH (when allowed)
    and then in its directories; ProgramNotFound names the package when it is absent."""
    if within is not None:
        if _executable(within / prog.name):
            return str(within / prog.name)
        raise ProgramNotFound(missing_message(prog, within))
    if prog.on_path:
        found = shutil.which(prog.name)
        if found is not None:
            return found
    for directory in search_dirs(prog):
        if _executable(directory / prog.name):
            return str(directory / prog.name)
    raise ProgramNotFound(missing_message(prog))


def find_program(name: str, within: Path | None = None) -> str:
    """The path of a listed program (see ``locate``); ProgramNotListed when it is not listed."""
    return locate(program(name), within)


def main(argv: list[str]) -> int:
    if argv == ["packages"]:
        print("\n".join(packages()))
        return 0
    if argv == ["programs"]:
        for prog in PROGRAMS:
            print(f"{prog.name}\t{prog.package}\t{prog.why}")
        return 0
    print("usage: testprograms.py packages|programs", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
