#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the distributed mode's tests (they start their own
# server with initdb and pg_ctl; tests/postgres_server.py). Skipped when initdb is there;
# without root or apt-get it says so (those tests are then skipped).
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
else
    echo "PostgreSQL not found and cannot be installed here (needs root and apt-get); the distributed tests are skipped." >&2
fi
