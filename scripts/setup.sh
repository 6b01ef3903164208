#!/usr/bin/env bash
# Install what Sandgate needs on a fresh Debian machine (run as root); idempotent.
# Python deps go in a venv (.venv), Debian's docker.io and debootstrap come from apt, dockerd
# is started when no engine answers, and the sandbox images are built when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDGATE_VENV:-.venv}

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
ldconfig -p | grep -q 'libseccomp.so.2' || missing+=(libseccomp2)
# The browser tests (tests/browser) drive Debian's Chromium through Debian's chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'

scripts/docker-up.sh
"$VENV/bin/sandgate" images build --if-missing
