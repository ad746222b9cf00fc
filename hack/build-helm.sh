#!/usr/bin/env bash
# Builds a pinned Helm 3 release from its Go module into a cache directory that
# survives between runs. Prints the path of the helm binary; a no-op when it is
# already cached.
#
# `go install` alone would leave helm reporting version "v3.x-dev" and assuming
# Kubernetes v1.20 for `.Capabilities` and the deprecation lint, so the release
# version and the Kubernetes minor of its client-go are stamped in through
# ldflags, the way helm's own release build does.
set -euo pipefail

HELM_VERSION="${PATCHBAY_HELM_VERSION:-v3.19.0}"
CACHE_ROOT="${PATCHBAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patchbay}"
BIN_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
HELM="$BIN_DIR/helm"

if [ -x "$HELM" ]; then
  echo "$HELM"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build helm" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$BIN_DIR"

log() { echo "[build-helm] $*" >&2; }

cd "$work"
printf 'module patchbay.local/helm\n\ngo 1.24.0\n\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION" > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > tools.go
log "resolving helm $HELM_VERSION"
go mod tidy -e >&2
# client-go v0.Y.Z belongs to Kubernetes v1.Y.
client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
log "building helm $HELM_VERSION (first run only; takes several minutes)"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$HELM.tmp" helm.sh/helm/v3/cmd/helm >&2
mv "$HELM.tmp" "$HELM"
echo "$HELM"
