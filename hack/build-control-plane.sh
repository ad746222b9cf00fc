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

K8S_VERSION="${PATCHBAY_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${PATCHBAY_ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${PATCHBAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patchbay}"
BIN_DIR="$CACHE_ROOT/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

if have_all; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$BIN_DIR"

log() { echo "[build-control-plane] $*" >&2; }

# --- Kubernetes ---------------------------------------------------------------
staging_minor="v0.${K8S_VERSION#v1.}"
k8s_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
mkdir -p "$work/k8s"
(
  cd "$work/k8s"
  {
    echo "module patchbay.local/controlplane"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging_minor"'#p' "$k8s_gomod"
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
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
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w$stamp" -o "$BIN_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
      mv "$BIN_DIR/$cmd.tmp" "$BIN_DIR/$cmd"
    fi
  done
)

# --- etcd -----------------------------------------------------------------------
if [ ! -x "$BIN_DIR/etcd" ]; then
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    printf 'module patchbay.local/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    log "building etcd $ETCD_VERSION"
    go mod tidy -e >&2
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
    mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  )
fi

have_all || { echo "control plane build incomplete in $BIN_DIR" >&2; exit 1; }
echo "$BIN_DIR"
