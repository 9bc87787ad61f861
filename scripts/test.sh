#!/usr/bin/env bash
# The whole test suite from nothing: installs what is missing (scripts/setup.sh; the first run builds
# kube-apiserver from Debian's source, ~5 minutes on 2 cores, and helm), then runs every tier with pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
exec python3 -m pytest "$@"
