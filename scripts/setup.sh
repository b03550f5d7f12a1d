#!/usr/bin/env bash
# Creates .venv and installs acestep-api with its test extras. Idempotent: it reinstalls
# only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.acestep-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # constraints.txt pins torch to the CPU build for development and CI.
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test,ui,serverless,s3]"
    echo "$want" > "$stamp"
fi
