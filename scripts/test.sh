#!/usr/bin/env bash
# The whole suite: set-up, linters, type check, unit + Docker tests. Stops any dockerd it
# started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prepare.sh
"$VENV/bin/ruff" check controller tests benchmarks
"$VENV/bin/mypy" controller
"$VENV/bin/mypy" tests benchmarks
"$VENV/bin/sandgate" policy test policies/*/
# The escape-probe battery against every sandbox image, under every shipped profile.
mkdir -p .sandgate/reports
for dockerfile in sandbox_images/*/Dockerfile; do
    image="sandgate/$(basename "$(dirname "$dockerfile")"):latest"
    for profile in standard strict; do
        "$VENV/bin/sandgate" probe --image "$image" --profile "$profile" \
            --junit ".sandgate/reports/probe-$profile.xml" >".sandgate/reports/probe-$profile.log" \
            || { tail -40 ".sandgate/reports/probe-$profile.log"; exit 1; }
        echo "probe $image $profile: $(tail -1 ".sandgate/reports/probe-$profile.log")"
    done
done
"$VENV/bin/pytest" tests "$@"
