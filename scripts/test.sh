#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (CPU only, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh
bash scripts/install-postgres.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest "$@"
