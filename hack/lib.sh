# Shared by the hack/build-*.sh scripts, which build pinned Go programs once into a cache
# that survives between runs. Source it; it defines variables and functions only.

CACHE_ROOT="${PATCHBAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patchbay}"

# exit_if_cached PRINT FILE...: when every FILE is already built, print PRINT and stop the
# script, so that a second run is a no-op.
exit_if_cached() {
  local print="$1" file
  shift
  for file in "$@"; do [ -x "$file" ] || return 0; done
  echo "$print"
  exit 0
}

# start_go_build NAME WHAT BIN_DIR: checks that go is there, creates BIN_DIR and a scratch
# directory $work that is removed when the script exits, and defines log for messages
# tagged with NAME. Builds use the local toolchain only, never one go would download.
start_go_build() {
  local what="$2"
  LOG_TAG="$1"
  command -v go >/dev/null || { echo "go is required to build $what" >&2; exit 1; }
  export GOTOOLCHAIN=local
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$3"
}

log() { echo "[$LOG_TAG] $*" >&2; }

# write_tools_module MODULE IMPORT...: a go.mod naming MODULE (the rest of go.mod is read
# from stdin) and a tools.go importing each IMPORT, so that `go mod tidy` resolves what
# the commands to build need.
write_tools_module() {
  local module="$1" import
  shift
  { printf 'module %s\n\ngo 1.24.0\n\n' "$module"; cat; } > go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for import in "$@"; do printf '\t_ "%s"\n' "$import"; done
    printf ')\n'
  } > tools.go
}

# go_build_into OUT PACKAGE [LDFLAGS]: a static, stripped build of PACKAGE that appears at
# OUT only once it is complete, so that an interrupted build is never taken for a cached one.
go_build_into() {
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w${3:+ $3}" -o "$1.tmp" "$2" >&2
  mv "$1.tmp" "$1"
}
