"""tests/support/testprograms.py, the one list of the programs the test helpers run and the Debian
package of each: the helpers find programs only through it, the installer installs exactly
its packages, and (where dpkg is there) each package really ships its programs."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import testprograms
from testprograms import (
    PROGRAMS,
    Program,
    ProgramNotFound,
    ProgramNotListed,
    find_program,
    locate,
)

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "hack" / "install-test-deps.sh"
# Every helper that may run a program, except the list itself.
HELPERS = sorted(
    p
    for p in [*(REPO / "tests" / "support").glob("*.py"), *(REPO / "hack").glob("*.py")]
    if p.name != "testprograms.py"
)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


# The lookup


def test_a_missing_program_is_reported_with_the_package_that_ships_it(tmp_path: Path) -> None:
    with pytest.raises(ProgramNotFound) as raised:
        find_program("my_print_defaults", within=tmp_path)
    assert str(raised.value) == (
        f"my_print_defaults not found in {tmp_path}: install the Debian package "
        "mariadb-client-core (hack/install-test-deps.sh does)"
    )


def test_a_program_missing_everywhere_is_reported_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    prog = Program("some-tool", "some-package", "a test", (str(tmp_path / "bin"),))
    with pytest.raises(ProgramNotFound) as raised:
        locate(prog)
    assert str(raised.value) == (
        "some-tool not found: install the Debian package some-package "
        "(hack/install-test-deps.sh does)"
    )


def test_an_unlisted_program_cannot_be_looked_up() -> None:
    with pytest.raises(
        ProgramNotListed, match=r"not-a-listed-tool is not listed in tests/support/"
    ):
        find_program("not-a-listed-tool")


def test_path_comes_before_the_program_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _executable(tmp_path / "path" / "tool")
    _executable(tmp_path / "sbin" / "tool")
    monkeypatch.setenv("PATH", str(on_path.parent))
    prog = Program("tool", "pkg", "a test", (str(tmp_path / "sbin"),))
    assert locate(prog) == str(on_path)


def test_a_program_expected_at_a_fixed_place_ignores_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(_executable(tmp_path / "path" / "tool").parent))
    fixed = _executable(tmp_path / "usr" / "bin" / "tool")
    prog = Program("tool", "pkg", "a test", (str(fixed.parent),), on_path=False)
    assert locate(prog) == str(fixed)


def test_a_non_executable_file_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("not a program")
    prog = Program("tool", "pkg", "a test", (str(tmp_path),), on_path=False)
    with pytest.raises(ProgramNotFound):
        locate(prog)


def test_the_newest_versioned_directory_holding_the_program_wins(tmp_path: Path) -> None:
    for version in ("9", "15"):
        _executable(tmp_path / version / "bin" / "initdb")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a client-only version: no initdb
    prog = Program("initdb", "postgresql", "a test", (f"{tmp_path}/*/bin",), on_path=False)
    assert locate(prog) == str(tmp_path / "15" / "bin" / "initdb")


def test_postgresql_tools_are_looked_up_per_version_not_on_path() -> None:
    for name in ("initdb", "pg_ctl", "postgres"):
        prog = testprograms.program(name)
        assert prog.directories == ("/usr/lib/postgresql/*/bin",)
        assert not prog.on_path


def test_each_program_is_listed_once() -> None:
    names = [p.name for p in PROGRAMS]
    assert len(names) == len(set(names))


# The helpers


def _python_sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in HELPERS:
        yield path, ast.parse(path.read_text(), filename=str(path))


def _callee(call: ast.Call) -> str:
    parts: list[str] = []
    node: ast.expr = call.func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


RUNNERS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "os.system",
    "os.execv",
    "os.execvp",
}
# A program spelled as a path of its own instead of being looked up.
PROGRAM_PATH = re.compile(r"^/(usr/(local/)?)?(s?bin|lib|libexec)/")


def test_every_program_the_helpers_look_up_is_listed() -> None:
    listed = {p.name for p in PROGRAMS}
    looked_up: set[str] = set()
    for path, tree in _python_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node).endswith("find_program"):
                name = _literal(node.args[0]) if node.args else None
                if name is not None:
                    assert name in listed, f"{path.name} looks up {name}, which is not listed"
                    looked_up.add(name)
    assert looked_up, "no helper looks programs up through find_program"


def test_the_helpers_run_programs_only_through_the_list() -> None:
    bypasses: list[str] = []
    for path, tree in _python_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                callee, first = _callee(node), node.args[0]
                if callee in RUNNERS:
                    argv0 = first
                    if isinstance(first, ast.List | ast.Tuple) and first.elts:
                        argv0 = first.elts[0]
                    if (name := _literal(argv0)) is not None:
                        bypasses.append(f"{path.name}:{node.lineno} runs {name!r} by name")
                if callee == "shutil.which" and (name := _literal(first)) is not None:
                    bypasses.append(f"{path.name}:{node.lineno} looks {name!r} up by itself")
            if isinstance(node, ast.Constant) and PROGRAM_PATH.match(str(node.value)):
                bypasses.append(f"{path.name}:{node.lineno} spells the path {node.value!r}")
    assert bypasses == [], "look these up with testprograms.find_program:\n" + "\n".join(bypasses)


# The installer


def _fake_commands(bin_dir: Path, *, installed: bool) -> Path:
    log = bin_dir / "apt-get.log"
    (bin_dir / "dpkg").write_text(f"#!/bin/sh\nexit {0 if installed else 1}\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for name in ("dpkg", "apt-get", "sudo"):
        (bin_dir / name).chmod(0o755)
    return log


def _run_installer(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(INSTALLER)], env=env, capture_output=True, text=True, check=False
    )


def test_the_installer_installs_exactly_the_listed_packages(tmp_path: Path) -> None:
    log = _fake_commands(tmp_path, installed=False)
    result = _run_installer(tmp_path)
    assert result.returncode == 0, result.stderr
    install = [line for line in log.read_text().splitlines() if line.startswith("install")]
    assert len(install) == 1
    assert install[0].split() == [
        "install",
        "-y",
        "--no-install-recommends",
        *testprograms.packages(),
    ]


def test_the_installer_does_nothing_when_every_listed_package_is_installed(
    tmp_path: Path,
) -> None:
    log = _fake_commands(tmp_path, installed=True)
    result = _run_installer(tmp_path)
    assert result.returncode == 0, result.stderr
    assert not log.exists()


def test_the_listed_packages_are_printed_for_the_installer() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "support" / "testprograms.py"), "packages"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == sorted({p.package for p in PROGRAMS})


# The Debian packages (read from dpkg's database; nothing is installed)

needs_dpkg = pytest.mark.skipif(
    shutil.which("dpkg-query") is None, reason="no dpkg-query: not a Debian system"
)


def _dpkg_query(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True, check=False)


def _installed(package: str) -> bool:
    result = _dpkg_query("-W", "-f=${db:Status-Status}", package)
    return result.returncode == 0 and result.stdout == "installed"


def _depends(package: str) -> set[str]:
    """The packages ``package`` depends on directly (every alternative counts)."""
    fields = _dpkg_query("-W", "-f=${Depends},${Pre-Depends}", package).stdout
    names = set()
    for item in re.split(r"[,|]", fields):
        name = re.sub(r"\(.*?\)", "", item).strip().split(":")[0]
        if name:
            names.add(name)
    return names


def _spellings(path: str) -> list[str]:
    """The names dpkg may know a file by: as found and resolved, each with and without
    /usr (Debian merged /bin, /sbin and /lib into /usr, and packages list either form)."""
    names: list[str] = []
    for form in (path, os.path.realpath(path)):
        other = form
        for top in ("/bin/", "/sbin/", "/lib/"):
            if form.startswith("/usr" + top):
                other = form.removeprefix("/usr")
            elif form.startswith(top):
                other = "/usr" + form
        names.extend(name for name in (form, other) if name not in names)
    return names


def _owners(path: str) -> set[str]:
    owners: set[str] = set()
    for name in _spellings(path):
        for line in _dpkg_query("-S", name).stdout.splitlines():
            if line.startswith("diversion by") or ": " not in line:
                continue
            packages, _ = line.split(": ", 1)
            owners.update(p.strip().split(":")[0] for p in packages.split(","))
    return owners


@needs_dpkg
@pytest.mark.parametrize("prog", PROGRAMS, ids=lambda p: p.name)
def test_each_listed_program_is_shipped_by_a_package_the_installer_installs(
    prog: Program,
) -> None:
    if not _installed(prog.package):
        pytest.skip(f"{prog.package} is not installed: run hack/install-test-deps.sh")
    try:
        path = find_program(prog.name)
    except ProgramNotFound:
        pytest.fail(
            f"{prog.package} is installed but {prog.name} is not where the helpers look: "
            f"list the package that ships {prog.name}"
        )
    # A metapackage (postgresql) installs the versioned package (postgresql-15) that ships it.
    installed_with_it = {prog.package} | _depends(prog.package)
    owners = _owners(path)
    assert owners & installed_with_it, (
        f"{path} belongs to {sorted(owners) or 'no package'}, "
        f"not to {prog.package}, which tests/support/testprograms.py lists for {prog.name}"
    )
