# Sourced by scripts that need the venv and an engine: runs the set-up (which starts dockerd
# when none answers) and, if this script's set-up started it, stops it on exit. Sets VENV.
VENV=${SANDGATE_VENV:-.venv}
started_docker=0
[ -f .sandgate/dockerd.pid ] || started_docker=1
scripts/setup.sh
if [ "$started_docker" = 1 ] && [ -f .sandgate/dockerd.pid ]; then
    trap scripts/docker-down.sh EXIT
fi
