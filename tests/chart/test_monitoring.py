"""The chart's PrometheusRule and Grafana dashboard: the alerts pass promtool's checks and
fire and resolve in its unit tests (tests/chart/prometheus), each has a runbook, and every
query names only metrics a running operator serves."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import localcluster
from chart import CHART, Manifest, helm, helm_binary, named, of_kind, render, the, value_flags
from gotools import promtool
from http_server import TokenApi
from operator_harness import OperatorProcess, apply_http_connection, wait_for_reason
from tests.conftest import REPO_ROOT

MONITORING_ON: dict[str, Any] = {
    "metrics": {
        "enabled": True,
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}
PROMETHEUS_TESTS = sorted((REPO_ROOT / "tests" / "chart" / "prometheus").glob("*.yaml"))


@pytest.fixture(scope="module")
def helm_path() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def monitoring(helm_path: Path) -> list[Manifest]:
    return render(helm_path, MONITORING_ON)


@pytest.fixture(scope="module")
def rule_groups(monitoring: list[Manifest]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = the(monitoring, "PrometheusRule")["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def rules_dir(rule_groups: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered rules as a Prometheus rule file, beside promtool's unit tests."""
    directory = tmp_path_factory.mktemp("prometheus")
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
    for test in PROMETHEUS_TESTS:
        shutil.copy(test, directory)
    return directory


def alert_names(rule_groups: list[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in rule_groups for rule in group["rules"] if "alert" in rule]


def dashboard_of(manifests: list[Manifest]) -> dict[str, Any]:
    configmap = named(manifests, "ConfigMap", "patchbay-dashboard")
    dashboard: dict[str, Any] = json.loads(configmap["data"]["patchbay.json"])
    return dashboard


def test_alerts_and_dashboard_are_off_by_default(helm_path: Path) -> None:
    manifests = render(helm_path)
    assert of_kind(manifests, "PrometheusRule") == []
    assert "patchbay-dashboard" not in [m["metadata"]["name"] for m in manifests]


def test_chart_with_alerts_and_dashboard_passes_helm_lint(helm_path: Path) -> None:
    flags = value_flags(MONITORING_ON)
    result = helm(helm_path, "lint", "--strict", str(CHART), *flags, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_rules_pass_promtool_check(rules_dir: Path) -> None:
    result = promtool("check", "rules", str(rules_dir / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


@pytest.mark.parametrize("test_file", PROMETHEUS_TESTS, ids=[p.stem for p in PROMETHEUS_TESTS])
def test_alert_fires_and_resolves_in_promtool_unit_test(rules_dir: Path, test_file: Path) -> None:
    result = promtool("test", "rules", test_file.name, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook(rule_groups: list[dict[str, Any]]) -> None:
    tested = {
        case["alertname"]
        for path in PROMETHEUS_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    runbooks = set(re.findall(r"^### (Patchbay\w+)$", operations, re.MULTILINE))
    assert set(alert_names(rule_groups)) == tested == runbooks


def test_alerts_select_the_job_of_the_releases_service_monitor(helm_path: Path) -> None:
    manifests = render(helm_path, MONITORING_ON, release="billing")
    service = named(manifests, "Service", "billing-patchbay-metrics")
    assert the(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True
    renamed = the(manifests, "PrometheusRule")["spec"]["groups"]
    for group in renamed:
        for rule in group["rules"]:
            assert f"job='{service['metadata']['name']}'" in rule["expr"], rule["alert"]


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(
    helm_path: Path, monitoring: list[Manifest]
) -> None:
    configmap = named(monitoring, "ConfigMap", "patchbay-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "patchbay-system"
    assert dashboard_of(monitoring)["uid"] == "patchbay"

    elsewhere = {
        "metrics": {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Operators"},
            }
        }
    }
    moved = named(render(helm_path, elsewhere), "ConfigMap", "patchbay-dashboard")
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "Operators"}


# PromQL words that are not metric names where they stand without a parenthesis after them
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "bool", "offset", "and", "or", "unless"}


def metric_names(query: str) -> set[str]:
    """The metrics a PromQL query (with Grafana's $variables) reads: what is left once
    strings, label matchers, ranges, grouping clauses and function names are taken out."""
    query = re.sub(r"\"[^\"]*\"|'[^']*'", "", query)
    query = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", query)
    query = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", query)
    words = set(re.findall(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(?!\s*\()", query))
    return words - PROMQL_KEYWORDS


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(metric, label) reads metric
            queries.append(
                re.sub(r"label_values\((.*),\s*\w+\)", r"\1", variable["query"]["query"])
            )
    return queries


def test_metric_names_are_found_in_promql_queries() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, driver) (rate(a_bucket{job=~"$job"}'
        "[$__rate_interval]))) / on (x) group_left (y) b or vector(0)"
    ) == {"a_bucket", "b"}


def test_dashboard_and_alert_queries_name_only_metrics_the_operator_serves(
    monitoring: list[Manifest],
    rule_groups: list[dict[str, Any]],
    control_plane: localcluster.ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    api: TokenApi,
    token: str,
) -> None:
    # a verified Connection makes the operator serve every series it has
    apply_http_connection(control_plane, namespace, "orders", api.base_url, token)
    wait_for_reason(control_plane, namespace, "orders", "Verified")
    served = {name for name, _ in operator.metrics()}

    queries = dashboard_queries(dashboard_of(monitoring))
    queries += [rule["expr"] for group in rule_groups for rule in group["rules"]]
    for query in queries:
        named_metrics = metric_names(query)
        assert named_metrics, query
        assert named_metrics <= served, f"{query} names {sorted(named_metrics - served)}"
