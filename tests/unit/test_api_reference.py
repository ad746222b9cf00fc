"""docs/api.md is written from the models and stays current with them."""

from __future__ import annotations

from pathlib import Path

from patchbay.api.reference import render


def test_committed_api_reference_matches_the_models(repo_root: Path) -> None:
    committed = (repo_root / "docs" / "api.md").read_text()
    assert committed == render(), "run `make crds` and commit docs/api.md"


def test_api_reference_lists_every_field_with_its_rules() -> None:
    text = render()
    for field in (
        "`spec.connectorRef.name`",
        "`spec.credentials.items[].secretKeyRef.key`",
        "`status.verification.inputsHash`",
        "`spec.variables[].secret`",
        "`spec.rateLimit.per`",
    ):
        assert field in text
    assert "Validation rules:" in text
    # a table cell never breaks on a pattern's alternation bar
    pattern_rows = [line for line in text.splitlines() if "pattern" in line and "|" in line]
    assert all(row.count(" | ") == 3 for row in pattern_rows)
