#!/usr/bin/env bash
# Builds the MinIO server (the S3-compatible server the s3 driver's tests run
# against) from Go modules into a cache directory that survives between runs,
# keyed on the pinned version. Prints the path of the binary; a no-op when it
# is already there.
#
# MinIO tags its releases RELEASE.<date>, which are not semantic versions, and
# the module proxy refuses them by tag name, so MinIO is pinned by
# pseudo-version: the newest commit the proxy served when it was pinned
# (February 2026).
set -euo pipefail

MINIO_VERSION="${PATCHBAY_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CACHE_ROOT="${PATCHBAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patchbay}"
BIN_DIR="$CACHE_ROOT/minio/$MINIO_VERSION"
BINARY="$BIN_DIR/minio"

if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build MinIO" >&2; exit 1; }
export GOTOOLCHAIN=local
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$BIN_DIR"

echo "[build-minio] building github.com/minio/minio@$MINIO_VERSION (first run only; takes many minutes)" >&2
# go install builds outside any module, so the module's own go.mod and go.sum decide
# every dependency version.
CGO_ENABLED=0 GOBIN="$work" go install -trimpath -ldflags "-s -w" \
  "github.com/minio/minio@$MINIO_VERSION" >&2
mv "$work/minio" "$BINARY"
echo "$BINARY"
