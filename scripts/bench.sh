#!/usr/bin/env bash
# The benchmarks: set-up, then benchmarks/bench_pipeline.py, which writes
# benchmarks/results.json. Stops any dockerd it started. Extra arguments go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDGATE_VENV:-.venv}
started_docker=0
[ -f .sandgate/dockerd.pid ] || started_docker=1
scripts/setup.sh
if [ "$started_docker" = 1 ] && [ -f .sandgate/dockerd.pid ]; then
    trap scripts/docker-down.sh EXIT
fi
"$VENV/bin/python" -m benchmarks.bench_pipeline --runs 15 "$@"
