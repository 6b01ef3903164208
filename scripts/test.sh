#!/usr/bin/env bash
# The whole suite: set-up, linters, type check, unit + Docker tests. Stops any dockerd it
# started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDGATE_VENV:-.venv}
started_docker=0
[ -f .sandgate/dockerd.pid ] || started_docker=1
scripts/setup.sh
if [ "$started_docker" = 1 ] && [ -f .sandgate/dockerd.pid ]; then
    trap scripts/docker-down.sh EXIT
fi
"$VENV/bin/ruff" check controller tests benchmarks
"$VENV/bin/mypy" controller
"$VENV/bin/sandgate" policy test policies/*/
"$VENV/bin/pytest" tests "$@"
