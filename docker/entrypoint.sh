#!/usr/bin/env bash
# Container start. ACESTEP_MODE picks what runs:
#   api (default)  the REST API (with the UI when ACESTEP_UI=1). With ACESTEP_DATABASE_URL set it
#                  is a stateless replica of the distributed mode: it loads no model.
#   worker         one GPU worker of the distributed mode (needs ACESTEP_DATABASE_URL).
#   migrate        create the distributed mode's tables, then exit.
#   serverless     the RunPod serverless worker.
# Modes that load models fetch the weights into the checkpoints volume first when they are
# missing. Extra arguments go to the command.
set -euo pipefail

checkpoints=${ACESTEP_CHECKPOINT_DIR:-/app/checkpoints}
primary=${ACESTEP_CONFIG_PATH:-acestep-v15-turbo}
mode=${ACESTEP_MODE:-api}

case "$mode" in
    api | worker | migrate | serverless) ;;
    *)
        echo "ACESTEP_MODE must be api, worker, migrate or serverless, not '$mode'." >&2
        exit 2
        ;;
esac

if [ "$mode" = migrate ]; then
    exec acestep-api db migrate "$@"
fi

loads_models=1
if [ "$mode" = api ] && [ -n "${ACESTEP_DATABASE_URL:-}" ]; then
    loads_models=0  # a replica of the distributed mode: the workers hold the models
fi

if [ "$loads_models" = 1 ] && [ "${ACESTEP_DEMO:-0}" != 1 ] && [ ! -f "$checkpoints/$primary/config.json" ]; then
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

if [ "$mode" = serverless ]; then
    exec python3 -m acestep_api.serverless.handler "$@"
fi

demo_args=()
if [ "${ACESTEP_DEMO:-0}" = 1 ]; then
    demo_args+=(--demo)
fi
if [ "$mode" = worker ]; then
    exec acestep-api worker "${demo_args[@]}" "$@"
fi

serve_args=()
if [ "${ACESTEP_UI:-0}" = 1 ]; then
    serve_args+=(--ui)
fi
if [ "$loads_models" = 1 ]; then
    serve_args+=("${demo_args[@]}")
fi
exec acestep-api serve "${serve_args[@]}" "$@"
