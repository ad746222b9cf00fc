#!/usr/bin/env bash
# Install the Debian packages the test suite needs; a no-op when all are present.
# The packages are those of tests/support/testprograms.py, the one list of the programs the
# test helpers run and the package that ships each.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mapfile -t PACKAGES < <("${PYTHON:-python3}" "$here/../tests/support/testprograms.py" packages)
if [ "${#PACKAGES[@]}" -eq 0 ]; then
  echo "tests/support/testprograms.py listed no packages" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
echo "installing: ${missing[*]}" >&2
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
