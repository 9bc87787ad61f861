#!/usr/bin/env bash
# The whole test suite from nothing: installs what is missing (scripts/setup.sh; the first run builds Kubernetes
# 1.36 from the Go module proxy, ~8 minutes on 2 cores, and helm and kwok), then runs every tier with pytest in
# the project's virtual environment (.venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
