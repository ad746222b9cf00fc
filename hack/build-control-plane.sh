#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from Go
# modules into a cache directory that survives between runs, keyed on the
# pinned versions. Prints the directory holding the binaries.
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with local paths, so `go install k8s.io/kubernetes/cmd/...@vX` refuses to
# build it. A small wrapper module requires k8s.io/kubernetes and points each
# staging module at its published v0.Y.Z release instead. etcd's server
# module has replace directives too, hence a wrapper for it as well.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_VERSION="${PATCHBAY_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${PATCHBAY_ETCD_VERSION:-v3.6.16}"
BIN_DIR="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BINARY_PATHS=()
for b in etcd kube-apiserver kube-controller-manager kubectl; do BINARY_PATHS+=("$BIN_DIR/$b"); done

exit_if_cached "$BIN_DIR" "${BINARY_PATHS[@]}"
start_go_build build-control-plane "the control plane" "$BIN_DIR"
export GOFLAGS=-mod=mod

# --- Kubernetes ---------------------------------------------------------------
staging_minor="v0.${K8S_VERSION#v1.}"
k8s_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
mkdir -p "$work/k8s"
(
  cd "$work/k8s"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_minor"'#p' "$k8s_gomod"
    echo ")"
  } | write_tools_module patchbay.local/controlplane \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  log "resolving k8s.io/kubernetes $K8S_VERSION"
  go mod tidy -e >&2
  pkg="k8s.io/component-base/version"
  cgo_pkg="k8s.io/client-go/pkg/version"
  major=1
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  stamp=""
  for p in "$pkg" "$cgo_pkg"; do
    stamp+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    stamp+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    if [ ! -x "$BIN_DIR/$cmd" ]; then
      log "building $cmd (first run only; takes several minutes)"
      go_build_into "$BIN_DIR/$cmd" "k8s.io/kubernetes/cmd/$cmd" "$stamp"
    fi
  done
)

# --- etcd -----------------------------------------------------------------------
if [ ! -x "$BIN_DIR/etcd" ]; then
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" \
      | write_tools_module patchbay.local/etcd go.etcd.io/etcd/server/v3
    log "building etcd $ETCD_VERSION"
    go mod tidy -e >&2
    go_build_into "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  )
fi

for b in "${BINARY_PATHS[@]}"; do
  [ -x "$b" ] || { echo "control plane build incomplete in $BIN_DIR" >&2; exit 1; }
done
echo "$BIN_DIR"
