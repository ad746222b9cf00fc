#!/usr/bin/env bash
# Install the Debian packages the test suite needs; a no-op when all are present.
set -euo pipefail

PACKAGES=(
  postgresql # server binaries for tests/integration/test_driver_postgres.py
  openssh-server # sshd for tests/integration/test_driver_sftp.py
  mariadb-server-core # mariadbd and mariadb-install-db for tests/integration/test_driver_mysql.py
)

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
