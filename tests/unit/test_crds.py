"""The CRDs in crds/ are exactly what the pydantic models produce."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from patchbay.api.crd import DEFINITIONS, render_crds, stale_files


def _walk(node: Any, path: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((path, key))
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{index}]"))
    return found


def test_committed_crds_match_the_models(repo_root: Path) -> None:
    assert stale_files(repo_root / "crds") == [], "run `make crds` and commit the result"


def test_crd_schemas_are_structural_without_refs_or_unions() -> None:
    for text in render_crds().values():
        keys = {key for _, key in _walk(yaml.safe_load(text))}
        assert not keys & {"$ref", "anyOf", "oneOf", "allOf", "$defs", "title"}


def test_every_schema_property_has_a_description_for_kubectl_explain() -> None:
    for text in render_crds().values():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        missing = _undocumented(schema["properties"]["spec"], "spec") + _undocumented(
            schema["properties"]["status"], "status"
        )
        assert missing == [], f"{crd['metadata']['name']}: no description on {missing}"


def _undocumented(node: dict[str, Any], path: str) -> list[str]:
    missing = [] if node.get("description") else [path]
    for name, sub in node.get("properties", {}).items():
        missing += _undocumented(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict) and node["items"].get("type") == "object":
        missing += _undocumented(node["items"], f"{path}[]")
    return missing


def test_every_kind_has_status_subresource_category_and_short_name() -> None:
    for definition in DEFINITIONS:
        crd = yaml.safe_load(render_crds()[f"patchbay.dev_{definition.plural}.yaml"])
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["patchbay"]
        assert crd["spec"]["names"]["shortNames"]
