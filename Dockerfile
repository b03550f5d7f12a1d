# acestep-api on an NVIDIA GPU: the REST API on port 8000 (as the RunPod pod images), the
# browser UI on 7860 with ACESTEP_UI=1, or the RunPod serverless worker with
# ACESTEP_MODE=serverless. Checkpoints live in a volume at /app/checkpoints and are downloaded
# there at the first start when missing (see docs/deploy.md).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# python3-venv for an isolated environment; libgomp1 for torch's CPU threads. Ubuntu's
# package versions move with its security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app

# torch first, from the CUDA index: its layer is reused when only the application changes.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml README.md constraints.txt ./
COPY acestep_api ./acestep_api
# The project itself, with every dependency pinned by constraints.txt (torch is already there).
# hadolint ignore=DL3013
RUN pip install -c constraints.txt ".[ui,serverless,s3]"

COPY docker/entrypoint.sh /usr/local/bin/acestep-entrypoint

# Listen on every interface of the container and trust the platform's proxy headers
# (X-Forwarded-Proto/-For; absolute URLs also follow X-Forwarded-Host).
ENV ACESTEP_API_HOST=0.0.0.0 \
    ACESTEP_API_PORT=8000 \
    ACESTEP_UI_HOST=0.0.0.0 \
    ACESTEP_UI_PORT=7860 \
    ACESTEP_FORWARDED_ALLOW_IPS=* \
    ACESTEP_CHECKPOINT_DIR=/app/checkpoints \
    ACESTEP_OUTPUT_DIR=/app/outputs \
    ACESTEP_DOWNLOAD_ON_START=1 \
    HF_HOME=/app/checkpoints/.hf-cache

VOLUME ["/app/checkpoints", "/app/outputs"]
EXPOSE 8000 7860

# Loading (or first downloading) the weights takes minutes: a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ACESTEP_API_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["acestep-entrypoint"]
CMD []
