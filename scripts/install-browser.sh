#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test of the UI (tests/ui). Skipped when a
# Chromium is already there; without root or apt-get it says so (tests/ui then fails, naming this script).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x "${ACESTEP_CHROMIUM:-/usr/bin/chromium}" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
    echo "Chromium not found and cannot be installed here (needs root and apt-get); tests/ui needs it." >&2
fi
