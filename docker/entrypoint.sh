#!/usr/bin/env bash
# Container start: fetch the weights into the checkpoints volume when they are missing, then
# run the API (with the UI when ACESTEP_UI=1) or, with ACESTEP_MODE=serverless, the RunPod
# serverless worker. Extra arguments go to `acestep-api serve`.
set -euo pipefail

checkpoints=${ACESTEP_CHECKPOINT_DIR:-/app/checkpoints}
primary=${ACESTEP_CONFIG_PATH:-acestep-v15-turbo}

if [ "${ACESTEP_DEMO:-0}" != 1 ] && [ ! -f "$checkpoints/$primary/config.json" ]; then
    if [ "${ACESTEP_DOWNLOAD_ON_START:-1}" = 1 ]; then
        echo "No $primary under $checkpoints: downloading the ACE-Step 1.5 weights (several GB)..."
        # ACESTEP_EXTRA_MODELS: space-separated extra models, e.g. "acestep-v15-base acestep-5Hz-lm-4B".
        # shellcheck disable=SC2086  # word splitting of the model list is wanted
        acestep-api download --dir "$checkpoints" ${ACESTEP_EXTRA_MODELS:-}
    else
        echo "No $primary under $checkpoints and ACESTEP_DOWNLOAD_ON_START=0: mount the weights there." >&2
        exit 1
    fi
fi

if [ "${ACESTEP_MODE:-api}" = serverless ]; then
    exec python3 -m acestep_api.serverless.handler "$@"
fi

serve_args=()
if [ "${ACESTEP_UI:-0}" = 1 ]; then
    serve_args+=(--ui)
fi
if [ "${ACESTEP_DEMO:-0}" = 1 ]; then
    serve_args+=(--demo)
fi
exec acestep-api serve "${serve_args[@]}" "$@"
