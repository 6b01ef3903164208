#!/usr/bin/env bash
# Sandgate's main job: the REST service on its embedded defaults (SQLite and a generated
# signing key in ~/.local/share/sandgate, the local Docker engine), on 127.0.0.1:8080.
# It prints how to make a first call. Ctrl-C (SIGTERM) drains in-flight runs, then exits.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDGATE_VENV:-.venv}
scripts/setup.sh
exec "$VENV/bin/sandgate" serve --host "${SANDGATE_HOST:-127.0.0.1}" --port "${SANDGATE_PORT:-8080}"
