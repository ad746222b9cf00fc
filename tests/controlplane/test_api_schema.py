"""The generated CRDs, installed on a real kube-apiserver, accept the examples
and reject invalid manifests with messages that name the offending field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import localcluster
from tests.conftest import REPO_ROOT

INVALID_DIR = Path(__file__).parent / "invalid_manifests"
INVALID_MANIFESTS = sorted(INVALID_DIR.glob("*.yaml"))


def _expected_fragments(manifest: Path) -> list[str]:
    return [
        line.removeprefix("# expect:").strip()
        for line in manifest.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def test_catalogue_and_examples_apply_and_show_printer_columns(
    control_plane: localcluster.ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "deploy" / "examples"))

    table = control_plane.kubectl("get", "connections", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == [
        "NAME",
        "CONNECTOR",
        "DRIVER",
        "PHASE",
        "READY",
        "REASON",
        "LAST",
        "VERIFIED",
        "AGE",
    ]
    names = {line.split()[0] for line in table.splitlines()[1:]}
    assert names == {"orders-db", "inventory"}

    connectors = control_plane.kubectl("get", "clusterconnectors").stdout.splitlines()
    assert connectors[0].split() == ["NAME", "DRIVER", "READY", "CONNECTIONS", "MATURITY", "AGE"]
    assert {"postgres", "mysql", "http-api"} <= {line.split()[0] for line in connectors[1:]}
    experimental = {line.split()[0] for line in connectors[1:] if "experimental" in line.split()}
    assert "flexiroam" in experimental and "postgres" not in experimental


def _is_contained(wanted: object, stored: object) -> bool:
    """Everything written is stored; the API server may only add defaults."""
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(
            k in stored and _is_contained(v, stored[k]) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(stored, list)
            and len(wanted) == len(stored)
            and all(_is_contained(w, s) for w, s in zip(wanted, stored, strict=True))
        )
    return wanted == stored


def test_every_catalogue_entry_is_stored_as_written(
    control_plane: localcluster.ControlPlane,
) -> None:
    catalogue = sorted((REPO_ROOT / "deploy" / "connectors").glob("*.yaml"))
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "connectors"))

    listed = yaml.safe_load(control_plane.kubectl("get", "clusterconnectors", "-o", "yaml").stdout)
    stored = {item["metadata"]["name"]: item for item in listed["items"]}
    for path in catalogue:
        written = yaml.safe_load(path.read_text())
        name = written["metadata"]["name"]
        assert name in stored, f"{path.name} was not stored"
        assert _is_contained(written["spec"], stored[name]["spec"]), path.name
    assert len(catalogue) >= 18


def test_api_server_fills_documented_defaults(
    control_plane: localcluster.ControlPlane, namespace: str
) -> None:
    manifest = {
        "apiVersion": "patchbay.dev/v1alpha1",
        "kind": "Connection",
        "metadata": {"name": "minimal"},
        "spec": {"connectorRef": {"name": "postgres"}},
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    stored = yaml.safe_load(
        control_plane.kubectl("get", "connection", "minimal", "-n", namespace, "-o", "yaml").stdout
    )
    assert stored["spec"]["connectorRef"]["kind"] == "ClusterConnector"
    assert stored["spec"]["suspend"] is False
    assert stored["spec"]["default"] is False


def test_short_names_and_category_reach_the_same_objects(
    control_plane: localcluster.ControlPlane, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "deploy" / "examples"))
    by_short_name = control_plane.kubectl("get", "conn", "-n", namespace, "-o", "name").stdout
    by_category = control_plane.kubectl("get", "patchbay", "-n", namespace, "-o", "name").stdout
    assert "connection.patchbay.dev/orders-db" in by_short_name
    assert "connection.patchbay.dev/orders-db" in by_category
    assert "connector.patchbay.dev/inventory-api" in by_category


def test_kubectl_explain_shows_field_documentation(
    control_plane: localcluster.ControlPlane,
) -> None:
    explained = control_plane.kubectl("explain", "connection.spec.verification.mode").stdout
    assert "Periodic re-verifies on a schedule" in explained


def test_invalid_corpus_is_large_enough() -> None:
    assert len(INVALID_MANIFESTS) >= 25


@pytest.mark.parametrize("manifest", INVALID_MANIFESTS, ids=lambda p: p.stem)
def test_invalid_manifest_is_rejected_naming_the_field(
    control_plane: localcluster.ControlPlane, namespace: str, manifest: Path
) -> None:
    expected = _expected_fragments(manifest)
    assert expected, f"{manifest.name} declares no '# expect:' line"
    obj = yaml.safe_load(manifest.read_text())
    scope = [] if obj["kind"] == "ClusterConnector" else ["-n", namespace]
    applied = control_plane.kubectl("apply", *scope, "-f", str(manifest), check=False)
    assert applied.returncode != 0, f"{manifest.name} was accepted"
    for fragment in expected:
        assert fragment in applied.stderr, applied.stderr
    stored = control_plane.kubectl(
        "get", obj["kind"].lower(), obj["metadata"]["name"], *scope, check=False
    )
    assert "NotFound" in stored.stderr
