#!/usr/bin/env bash
# Sets up the environment and serves the API. With real weights in ./checkpoints (or
# ACESTEP_CHECKPOINT_DIR) it serves them; without, it serves the built-in demo checkpoints.
# Extra arguments go to `acestep-api serve` (e.g. --host 0.0.0.0 --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/acestep-api serve --demo-if-no-weights "$@"
