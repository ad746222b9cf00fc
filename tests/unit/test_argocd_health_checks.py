"""The Argo CD health checks users copy (the argocd-cm patch, the chart's values) are the
scripts of deploy/argocd/health, for each of patchbay's kinds."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import yaml

from tests.conftest import REPO_ROOT

KINDS = ("Connection", "Connector", "ClusterConnector")


def generator() -> ModuleType:
    path = REPO_ROOT / "hack" / "argocd_health_checks.py"
    spec = importlib.util.spec_from_file_location("argocd_health_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_kind_has_a_health_check_from_the_lua_scripts() -> None:
    checks = generator().health_checks()
    assert sorted(checks) == sorted(
        f"resource.customizations.health.patchbay.dev_{k}" for k in KINDS
    )
    scripts = {p.read_text() for p in (REPO_ROOT / "deploy" / "argocd" / "health").glob("*.lua")}
    assert set(checks.values()) == scripts


def test_the_argocd_cm_patch_and_chart_values_are_up_to_date() -> None:
    """Run `make chart-files` after editing deploy/argocd/health/*.lua."""
    checks = generator().health_checks()
    patch = yaml.safe_load((REPO_ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml").read_text())
    values = yaml.safe_load((REPO_ROOT / "charts" / "patchbay" / "values.yaml").read_text())
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"] == checks
    assert values["argocdHealthChecks"] == checks
