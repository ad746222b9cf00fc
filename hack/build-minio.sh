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

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MINIO_VERSION="${PATCHBAY_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
BIN_DIR="$CACHE_ROOT/minio/$MINIO_VERSION"
BINARY="$BIN_DIR/minio"

exit_if_cached "$BINARY" "$BINARY"
start_go_build build-minio MinIO "$BIN_DIR"

log "building github.com/minio/minio@$MINIO_VERSION (first run only; takes many minutes)"
# go install builds outside any module, so the module's own go.mod and go.sum decide
# every dependency version.
CGO_ENABLED=0 GOBIN="$work" go install -trimpath -ldflags "-s -w" \
  "github.com/minio/minio@$MINIO_VERSION" >&2
mv "$work/minio" "$BINARY"
echo "$BINARY"
