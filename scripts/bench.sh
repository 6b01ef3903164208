#!/usr/bin/env bash
# The benchmarks: set-up, then benchmarks/bench_pipeline.py (in process), which writes
# benchmarks/results.json, then benchmarks/bench_http.py (a real `sandgate serve` over HTTP),
# which adds its figures under "http", and again with a pool of 2 pairs ("http_pooled").
# Stops any dockerd it started. Extra arguments go to every benchmark (--runs N, --out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prepare.sh
"$VENV/bin/python" -m benchmarks.bench_pipeline --runs 15 "$@"
"$VENV/bin/python" -m benchmarks.bench_http --runs 15 "$@"
"$VENV/bin/python" -m benchmarks.bench_http --runs 15 --pool 2 --key http_pooled "$@"
