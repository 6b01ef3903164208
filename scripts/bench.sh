#!/usr/bin/env bash
# The benchmarks: set-up, then benchmarks/bench_pipeline.py, which writes
# benchmarks/results.json. Stops any dockerd it started. Extra arguments go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prepare.sh
"$VENV/bin/python" -m benchmarks.bench_pipeline --runs 15 "$@"
