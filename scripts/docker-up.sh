#!/usr/bin/env bash
# Make sure a Docker engine answers; start dockerd (and remember its pid) when none does.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker info >/dev/null 2>&1; then
    exit 0
fi
mkdir -p .sandgate
echo "docker-up: no engine answers; starting dockerd (log: .sandgate/dockerd.log)"
nohup dockerd >.sandgate/dockerd.log 2>&1 &
echo $! >.sandgate/dockerd.pid
for _ in $(seq 90); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "docker-up: dockerd did not answer within 90 s; see .sandgate/dockerd.log" >&2
exit 1
