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

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HELM_VERSION="${PATCHBAY_HELM_VERSION:-v3.19.0}"
BIN_DIR="$CACHE_ROOT/helm/$HELM_VERSION"
HELM="$BIN_DIR/helm"

exit_if_cached "$HELM" "$HELM"
start_go_build build-helm helm "$BIN_DIR"
export GOFLAGS=-mod=mod

cd "$work"
echo "require helm.sh/helm/v3 $HELM_VERSION" \
  | write_tools_module patchbay.local/helm helm.sh/helm/v3/cmd/helm
log "resolving helm $HELM_VERSION"
go mod tidy -e >&2
# client-go v0.Y.Z belongs to Kubernetes v1.Y.
client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
log "building helm $HELM_VERSION (first run only; takes several minutes)"
go_build_into "$HELM" helm.sh/helm/v3/cmd/helm "$ldflags"
echo "$HELM"
