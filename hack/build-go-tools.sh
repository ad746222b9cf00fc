#!/usr/bin/env bash
# Builds the Go programs the GitOps and monitoring tests run, once, into a cache directory
# that survives between runs, and prints the path of each one asked for (all by default):
#
#   kstatus        hack/gotools/cmd/kstatus: sigs.k8s.io/cli-utils' kstatus on objects read
#                  from stdin (what Flux and kpt use to tell whether an object is ready)
#   argocd-health  hack/gotools/cmd/argocd-health: an Argo CD health script run with
#                  gopher-lua the way Argo CD runs it
#   promtool       Prometheus' promtool, for `check rules` and `test rules`
#
# hack/gotools is a module of this repository, pinned by its go.mod and go.sum; its binaries
# are cached under a hash of its sources, so an edit rebuilds them. promtool is pinned by
# version and built with `go install`, so Prometheus' own go.mod and go.sum decide every
# dependency version.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GOTOOLS_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/gotools" && pwd)"
PROMETHEUS_VERSION="${PATCHBAY_PROMETHEUS_VERSION:-v0.316.0}"

# the hash covers every file the build reads, in a stable order
gotools_hash="$(cd "$GOTOOLS_SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
GOTOOLS_DIR="$CACHE_ROOT/gotools/$gotools_hash"
PROMTOOL_DIR="$CACHE_ROOT/promtool/$PROMETHEUS_VERSION"

build_gotools() {
  start_go_build build-go-tools "the kstatus and Argo CD health programs" "$GOTOOLS_DIR"
  local cmd
  for cmd in kstatus argocd-health; do
    log "building $cmd from hack/gotools (first run only)"
    # go.sum pins every module; no VCS stamp, the cache key names the sources already
    (cd "$GOTOOLS_SRC" && GOFLAGS="-mod=readonly -buildvcs=false" go_build_into "$GOTOOLS_DIR/$cmd" "./cmd/$cmd")
  done
}

build_promtool() {
  start_go_build build-go-tools promtool "$PROMTOOL_DIR"
  # the module's v0.3MM.P is Prometheus 3.MM.P, which `promtool --version` should say
  local minor="${PROMETHEUS_VERSION#v0.}"
  minor="${minor%%.*}"
  local release="$((minor / 100)).$((minor % 100)).${PROMETHEUS_VERSION##*.}"
  log "building promtool $release (github.com/prometheus/prometheus@$PROMETHEUS_VERSION; first run only; takes several minutes)"
  CGO_ENABLED=0 GOBIN="$work" go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >&2
  mv "$work/promtool" "$PROMTOOL_DIR/promtool"
}

path_of() {
  case "$1" in
    kstatus | argocd-health) echo "$GOTOOLS_DIR/$1" ;;
    promtool) echo "$PROMTOOL_DIR/promtool" ;;
    *) echo "unknown tool: $1 (kstatus, argocd-health or promtool)" >&2; exit 2 ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(kstatus argocd-health promtool)
for tool in "${tools[@]}"; do
  binary="$(path_of "$tool")"
  if [ ! -x "$binary" ]; then
    # each build runs in a subshell of its own, so its scratch directory and trap stay its own
    case "$tool" in
      promtool) (build_promtool) ;;
      *) (build_gotools) ;;
    esac
  fi
  echo "$binary"
done
