"""Pools on the real Docker engine: both runs in a pooled pair see the same world, nothing of
one submission (files, processes, sockets, shared memory) reaches the next, and a server
killed with a full pool leaves nothing a restart does not remove."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controller.adapters.fs.tmpfs import mounts_under
from controller.core.models import State
from controller.core.ports import OWNER_LABEL, PHASE_LABEL, SUBMISSION_UIDS, SandboxRuntime
from tests.api.conftest import Server, make_server
from tests.conftest import TEST_OWNER, make_controller, owned_containers, python
from tests.integration.conftest import LocalController
from tests.unit.test_pool import pooled_profiles, wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def pooled(tmp_path: Path, docker_runtime: SandboxRuntime) -> Iterator[LocalController]:
    controller = make_controller(tmp_path / "data", docker_runtime,
                                 profiles_dir=pooled_profiles(tmp_path, min=1, max=2))
    controller.pool.start()
    try:
        wait_until(lambda: controller.pool.state()["standard"].ready == 1, timeout=60)
        yield controller
    finally:
        controller.pool.close()
    assert mounts_under(tmp_path / "data") == []


def test_both_runs_of_a_pooled_pair_see_the_same_world(pooled: LocalController) -> None:
    probe = ("import os, socket, time\n"
             "mounts = sorted(' '.join(line.split()[3:]) for line in open('/proc/self/mountinfo')\n"
             "                if line.split()[4] in ('/workspace', '/sandbox'))\n"
             "fresh = time.time() - os.stat('/sandbox/main.py').st_mtime < 4\n"
             "print(os.getuid(), os.getcwd(), socket.gethostname(), sorted(os.environ.items()), "
             "mounts, fresh, open('/proc/self/status').read().count('Seccomp:'))")
    result = pooled.submit(python(probe))
    assert result.state is State.COMMITTED, result.reason
    assert pooled.pool.state()["standard"].hits == 1
    assert result.dry_run is not None and result.bounded_run is not None
    assert result.dry_run.stdout.sha256 == result.bounded_run.stdout.sha256, result.stdout
    assert result.sandbox_uid in SUBMISSION_UIDS
    assert result.stdout.startswith(f"{result.sandbox_uid} /workspace sandbox")
    assert "'/ /workspace rw,nosuid,nodev," in result.stdout and "/runs/" not in result.stdout
    assert "True" in result.stdout


LEAVES = """import os, socket, subprocess
open('/tmp/left-by-a', 'w').write('a')
open('/dev/shm/left-by-a', 'w').write('a')
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind('\\0left-by-a')
listener.listen()
subprocess.Popen(['sleep', '300'], start_new_session=True, pass_fds=(listener.fileno(),))
print('left')
"""

FINDS = """import os, socket
found = [p for p in ('/tmp/left-by-a', '/dev/shm/left-by-a') if os.path.exists(p)]
others = [pid for pid in os.listdir('/proc') if pid.isdigit() and int(pid) != os.getpid()]
names = open('/proc/net/unix').read()
try:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect('\\0left-by-a')
    found.append('abstract socket answers')
except OSError:
    pass
if 'left-by-a' in names:
    found.append('abstract socket listed')
print('found', found, 'processes', len(others))
"""


def test_nothing_of_one_submission_reaches_the_next(pooled: LocalController) -> None:
    first = pooled.submit(python(LEAVES))
    assert first.state is State.COMMITTED, first.reason
    wait_until(lambda: pooled.pool.state()["standard"].ready >= 1, timeout=60)
    second = pooled.submit(python(FINDS))
    assert second.state is State.COMMITTED, second.reason
    assert pooled.pool.state()["standard"].hits == 2
    # Only pid 1 (the code) besides itself: no process of the first submission.
    assert second.stdout.strip() == "found [] processes 0", second.stdout


def test_a_server_killed_with_a_full_pool_leaves_nothing_after_reconcile(
        tmp_path: Path) -> None:
    server = make_server(tmp_path, "pooled", profiles_dir=str(pooled_profiles(tmp_path, min=2,
                                                                               max=2)))
    try:
        _kill_with_a_full_pool(server)
    finally:  # whatever failed above, nothing of it outlives the test
        server.stop(signal.SIGKILL)
        server.cli("reconcile")


def _kill_with_a_full_pool(server: Server) -> None:
    key = server.principal("alice")
    auditor = server.principal("audrey", "auditor")
    server.start()
    try:
        wait_until(lambda: len(owned_containers(server.owner)) == 4, timeout=90)
        profiles = httpx.get(f"{server.url}/v1/profiles", timeout=10,
                             headers={"Authorization": f"Bearer {auditor}"}).json()
        pool = {p["name"]: p["pool"] for p in profiles}["standard"]
        assert pool["ready"] == 2 and pool["min"] == 2
        seen_by_agent = httpx.get(f"{server.url}/v1/profiles", timeout=10,
                                  headers={"Authorization": f"Bearer {key}"}).json()
        assert all(p["pool"] is None for p in seen_by_agent)  # others' activity
        answer = httpx.post(f"{server.url}/v1/submissions?wait=30", timeout=60,
                            headers={"Authorization": f"Bearer {key}"},
                            json={"language": "python", "code": "print(1)"})
        assert answer.json()["state"] == "committed", answer.text
        wait_until(lambda: len(owned_containers(server.owner)) == 4, timeout=90)
    finally:
        server.stop(signal.SIGKILL)
    assert len(owned_containers(server.owner)) == 4  # a crash leaves the pool behind
    assert mounts_under(server.data) != []
    done = server.cli("reconcile")  # what a restarted controller does first
    assert done.returncode == 0, done.stderr
    assert owned_containers(server.owner) == []
    assert mounts_under(server.data) == []
    assert not (server.data / "runs" / "pool").exists()
    _restart_and_stop(server)


def _restart_and_stop(server: Server) -> None:
    """Started again, the pool refills; stopped (SIGTERM), it leaves nothing."""
    server.start()
    try:
        wait_until(lambda: len(owned_containers(server.owner)) == 4, timeout=90)
    finally:
        server.stop()
    assert owned_containers(server.owner) == []
    assert mounts_under(server.data) == []


def test_a_pooled_sandbox_killed_while_waiting_does_not_fail_its_submission(
        pooled: LocalController) -> None:
    waiting = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={PHASE_LABEL}=dry_run",
         "--filter", f"label={OWNER_LABEL}={TEST_OWNER}"],
        capture_output=True, text=True, check=True).stdout.split()
    assert len(waiting) == 1
    subprocess.run(["docker", "kill", waiting[0]], capture_output=True, check=True)
    result = pooled.submit(python("print(1)"))
    assert result.state is State.COMMITTED, result.reason
    assert pooled.pool.state()["standard"].hits == 1
