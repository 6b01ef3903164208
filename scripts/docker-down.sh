#!/usr/bin/env bash
# Stop the dockerd that docker-up.sh started (by its pid), and only that one.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=.sandgate/dockerd.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
fi
rm -f "$pidfile"
