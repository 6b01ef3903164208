"""The Docker daemon restarted under a run: the submission ends safely, nothing is left.

The controller runs as its own process (`sandgate run`), as it does in production; the test
watches and restarts the daemon from outside with the docker CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from controller.core.ports import OWNER_LABEL, PHASE_LABEL
from controller.settings import SHIPPED_ROOT
from tests.chaos.conftest import BIN, Site
from tests.conftest import DOCKERD_PIDFILE

pytestmark = [pytest.mark.docker, pytest.mark.restarts_docker]
PIDFILE = DOCKERD_PIDFILE


def restart_daemon() -> None:
    """Stop the dockerd our set-up started (by its pid), then start it again the same way."""
    pid = int(PIDFILE.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    PIDFILE.unlink()
    done = subprocess.run([str(SHIPPED_ROOT / "scripts" / "docker-up.sh")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def running(owner: str, phase: str) -> bool:
    return bool(subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={OWNER_LABEL}={owner}",
         "--filter", f"label={PHASE_LABEL}={phase}"],
        capture_output=True, text=True, check=False).stdout.split())


def wait_for_run(owner: str, phase: str) -> None:
    """Until ``phase``'s code runs: the bounded run's sandbox is started beside the dry run
    and waits at its gate until the dry run's container is gone."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not running(owner, "dry_run"):
        time.sleep(0.1)
    while phase == "bounded" and time.monotonic() < deadline and running(owner, "dry_run"):
        time.sleep(0.1)
    if not running(owner, phase):
        raise AssertionError(f"no {phase} container is running")


@pytest.mark.parametrize(("phase", "final"), [("dry_run", "denied"),
                                              ("bounded", "rolled_back")])
def test_daemon_restart_mid_run(site: Site, tmp_path: Path, phase: str, final: str) -> None:
    (tmp_path / "job.py").write_text("import time\nopen('f', 'w').write('x')\ntime.sleep(6)\n")
    run = subprocess.Popen([str(BIN / "sandgate"), "run", str(tmp_path / "job.py"), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=site.env())
    wait_for_run(site.owner, phase)
    time.sleep(1.0)  # the code is running in it
    restart_daemon()
    stdout, stderr = run.communicate(timeout=180)
    result = json.loads(stdout)
    assert result["state"] == final, result["reason"] + stderr[-2000:]
    assert "infrastructure failure" in result["reason"]
    reconciled = site.sandgate("reconcile")  # what a restarted controller does
    assert reconciled.returncode == 0, reconciled.stderr
    assert site.invariants() == []
    assert not (site.settings.workspaces_dir / "@local" / "default" / "v" / "1").exists()
