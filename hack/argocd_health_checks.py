"""Writes the Argo CD health checks of deploy/argocd/health/*.lua where users copy them
from: deploy/argocd/argocd-cm-patch.yaml (a patch of Argo CD's argocd-cm) and the
`argocdHealthChecks` values of the Helm chart (the last section of values.yaml).

    python hack/argocd_health_checks.py

The .lua files are the only ones to edit; `make chart-files` runs this.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = REPO_ROOT / "deploy" / "argocd" / "health"
CM_PATCH = REPO_ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml"
VALUES = REPO_ROOT / "charts" / "patchbay" / "values.yaml"
VALUES_KEY = "argocdHealthChecks"

# argocd-cm key suffix (<group>_<kind>) -> script; both connector kinds share one
SCRIPT_OF_KIND = {
    "patchbay.dev_Connection": "connection.lua",
    "patchbay.dev_Connector": "connector.lua",
    "patchbay.dev_ClusterConnector": "connector.lua",
}

CM_PATCH_HEADER = """\
# Argo CD health checks for patchbay's Connection, Connector and ClusterConnector.
# Generated from deploy/argocd/health/*.lua by hack/argocd_health_checks.py: edit those.
# Apply with: kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm-patch.yaml
"""

VALUES_HEADER = f"""\
# Argo CD health checks for Connections, Connectors and ClusterConnectors, in argocd-cm's
# format. The chart renders nothing from them: copy them into Argo CD's argocd-cm data (or
# the argo-cd chart's configs.cm), e.g.
#   helm show values patchbay/patchbay | yq .{VALUES_KEY}
# Generated from deploy/argocd/health/*.lua by hack/argocd_health_checks.py.
"""


def health_checks() -> dict[str, str]:
    """argocd-cm data key -> Lua script."""
    return {
        f"resource.customizations.health.{kind}": (SCRIPTS / script).read_text()
        for kind, script in SCRIPT_OF_KIND.items()
    }


def literal_blocks(checks: dict[str, str], indent: int) -> str:
    """Each check as `key: |` and its script, indented as a YAML block scalar."""
    pad = " " * indent
    lines: list[str] = []
    for key, script in checks.items():
        lines.append(f"{pad}{key}: |")
        lines += [f"{pad}  {line}" if line else "" for line in script.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def cm_patch(checks: dict[str, str]) -> str:
    return (
        CM_PATCH_HEADER
        + "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\ndata:\n"
        + literal_blocks(checks, 2)
    )


def values_with(values: str, checks: dict[str, str]) -> str:
    """values.yaml with its health-check section (always the last one) written anew."""
    head = values.split(VALUES_HEADER, 1)[0].rstrip("\n")
    return f"{head}\n\n{VALUES_HEADER}{VALUES_KEY}:\n{literal_blocks(checks, 2)}"


def main() -> None:
    checks = health_checks()
    CM_PATCH.write_text(cm_patch(checks))
    VALUES.write_text(values_with(VALUES.read_text(), checks))


if __name__ == "__main__":
    main()
