#!/usr/bin/env bash
# A one-shot demo on the embedded defaults (SQLite and a generated key in
# ~/.local/share/sandgate, the local Docker engine): run the example through the pipeline,
# then verify the receipt log with the independent verifier.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDGATE_VENV:-.venv}
scripts/setup.sh
"$VENV/bin/sandgate" reconcile
"$VENV/bin/sandgate" run "${1:-examples/hello.py}"
out=$(mktemp -d)
"$VENV/bin/sandgate" receipts export --out "$out/receipts.jsonl"
"$VENV/bin/sandgate" keys export --out "$out/keys.pem"
"$VENV/bin/sandgate-verify" "$out/receipts.jsonl" --key "$out/keys.pem"
rm -r "$out"
