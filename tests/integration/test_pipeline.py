"""The whole lifecycle on the real Docker engine: what commits, what rolls back, what is
denied before it runs for real, what is quarantined."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from controller.core.models import Phase, State, Submission, SubmissionRequest
from controller.core.ports import SUBMISSION_UIDS
from tests.conftest import python
from tests.integration.conftest import LocalController, Spy

pytestmark = pytest.mark.docker


def files_of(controller: LocalController, version: int, workspace: str = "default") -> set[str]:
    root = controller.workspaces.version_dir(f"@local/{workspace}", version)
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_hello_in_python_and_sh_commits_with_a_version_bump(controller: LocalController) -> None:
    first = controller.submit(python('print("hi")'))
    assert (first.state, first.stdout, first.base_version, first.new_version) == (
        State.COMMITTED, "hi\n", 0, 1)
    second = controller.submit(SubmissionRequest(language="sh", code="echo hi"))
    assert (second.state, second.stdout, second.new_version) == (State.COMMITTED, "hi\n", 2)
    assert controller.store.workspace_version("default") == 2
    assert second.dry_run is not None and second.bounded_run is not None
    assert second.dry_run.exit_code == 0 and second.bounded_run.image_id.startswith("sha256:")


def test_a_written_file_is_in_the_next_version(controller: LocalController) -> None:
    result = controller.submit(python(
        "from pathlib import Path\nPath('out/report.txt').parent.mkdir()\n"
        "Path('out/report.txt').write_text('42')",
        files=[{"path": "input.txt", "content": "given"}]))
    assert result.state is State.COMMITTED
    version = controller.workspaces.version_dir("@local/default", 1)
    assert (version / "out/report.txt").read_text() == "42"
    assert (version / "input.txt").read_text() == "given"


def test_deleting_50_files_rolls_back_and_leaves_the_workspace(controller: LocalController) -> None:
    made = controller.submit(python(
        "for i in range(50):\n    open(f'f{i:02}.txt', 'w').write(str(i))"))
    assert made.state is State.COMMITTED
    before = files_of(controller, 1)
    result = controller.submit(python("import glob, os\nfor p in glob.glob('f*.txt'): "
                                      "os.remove(p)"))
    assert result.state is State.ROLLED_BACK
    assert "commit.rollback-mass-delete" in result.reason
    assert controller.store.workspace_version("default") == 1
    assert files_of(controller, 1) == before and len(before) == 50
    assert not controller.workspaces.version_dir("@local/default", 2).exists()


@pytest.mark.parametrize(("code", "rule"), [
    ("import os\nopen('tool', 'w').write('x')\nos.chmod('tool', 0o4755)", "run.deny-setuid"),
    ("import os\nos.symlink('/etc/passwd', 'passwd')", "run.deny-escaping-symlink"),
    ("import ctypes\nctypes.CDLL(None).ptrace(0, 0, 0, 0)", "run.deny-tripwire"),
])
def test_hazards_in_the_dry_run_deny_before_any_real_run(controller: LocalController, spy: Spy,
                                                         code: str, rule: str) -> None:
    result = controller.submit(python(code))
    assert result.state is State.DENIED and rule in result.reason
    assert spy.phases == [Phase.DRY_RUN]  # no bounded-run container was ever created
    assert controller.store.workspace_version("default") == 0


def test_a_time_bomb_that_hides_from_the_dry_run_is_quarantined(controller: LocalController,
                                                                spy: Spy) -> None:
    instant = time.time() + 4
    code = (f"import ctypes, time\nif time.time() > {instant}:\n"
            "    ctypes.CDLL(None).ptrace(0, 0, 0, 0)\nopen('planted', 'w').write('x')\n"
            "print('innocent')")

    def wait_past_the_instant(submission: Submission) -> None:
        # Between the dry run and the bounded run: let the wall clock pass the bomb's instant.
        if submission.state is State.ASSESSING:
            time.sleep(max(instant - time.time() + 0.2, 0))

    controller.listeners.append(wait_past_the_instant)
    result = controller.submit(python(code))
    assert result.dry_run is not None and result.dry_run.exit_code == 0
    assert result.state is State.QUARANTINED, result.reason
    assert spy.phases == [Phase.DRY_RUN, Phase.BOUNDED]
    assert result.bounded_run is not None and result.bounded_run.seccomp_killed
    evidence = Path(result.evidence_dir or "")
    assert {"submission.json", "stdout.log", "stderr.log", "container_changes.json",
            "code"} <= {p.name for p in evidence.iterdir()}
    assert controller.store.workspace_version("default") == 0
    assert files_of(controller, 0) == set()


@pytest.mark.parametrize(("name", "code", "limit"), [
    ("fork bomb", "import os\nwhile True:\n    os.fork()", "pids"),
    ("memory bomb", "x = []\nwhile True:\n    x.append(bytearray(10**7))", "memory"),
    ("infinite loop", "while True:\n    pass", "wall_time"),
    ("100 MB print", "import sys\nsys.stdout.write('x' * 100_000_000)", "output"),
])
def test_resource_bombs_end_with_the_limit_named(controller: LocalController, name: str, code: str,
                                                 limit: str) -> None:
    rss_before = psutil.Process(os.getpid()).memory_info().rss
    result = controller.submit(python(code))
    assert result.state is State.DENIED, name
    assert limit in result.reason, result.reason
    assert result.dry_run is not None
    assert limit in [hit.value for hit in result.dry_run.limits_hit]
    assert len(result.stdout) <= 1 << 20  # captured output stays capped
    grown = psutil.Process(os.getpid()).memory_info().rss - rss_before
    assert grown < 64 << 20, f"controller grew by {grown >> 20} MiB"
    after = controller.submit(python("print('still fine')"))
    assert after.state is State.COMMITTED, after.reason


def test_runs_see_the_same_world_in_both_phases(controller: LocalController) -> None:
    # The mounts behind /workspace, /sandbox and /etc/hosts, minus the first three fields
    # (mount ids and device numbers, which the kernel allocates afresh for every mount,
    # whichever phase it runs), sorted (the engine orders mounts of equal depth at random, in
    # either phase alike), and whether the code file is fresh: the runs are 5 s apart, so a
    # file written once would have aged.
    probe = ("import os, socket, time\n"
             "mounts = sorted(' '.join(line.split()[3:]) for line in open('/proc/self/mountinfo')\n"
             "                if line.split()[4] in ('/workspace', '/sandbox', '/etc/hosts'))\n"
             "fresh = time.time() - os.stat('/sandbox/main.py').st_mtime < 4\n"
             "print(os.getuid(), os.getcwd(), socket.gethostname(), sorted(os.environ.items()), "
             "open('/proc/self/status').read().count('Seccomp:'), mounts, fresh)")

    def pause_between_the_runs(submission: Submission) -> None:
        if submission.state is State.ASSESSING:
            time.sleep(5)

    controller.listeners.append(pause_between_the_runs)
    result = controller.submit(python(probe))
    assert result.state is State.COMMITTED
    assert result.dry_run is not None and result.bounded_run is not None
    assert result.dry_run.stdout.sha256 == result.bounded_run.stdout.sha256, result.stdout
    # The submission's own uid in both runs, named ``sandbox`` like every sandbox uid.
    assert result.sandbox_uid in SUBMISSION_UIDS
    assert result.stdout.startswith(f"{result.sandbox_uid} /workspace sandbox")
    # Each is the root of its own tmpfs: no host path, no data directory, in either run.
    assert "'/ /workspace rw,nosuid,nodev," in result.stdout
    assert "'/ /sandbox ro," in result.stdout
    assert "/runs/" not in result.stdout and "- tmpfs tmpfs " in result.stdout
    assert result.stdout.rstrip().endswith("True")


def test_a_tripwire_hit_by_a_child_process_denies(controller: LocalController, spy: Spy) -> None:
    # The child dies of SIGSYS; the parent shrugs and exits 0. Only the kernel's audit record
    # tells, and it must be enough to deny.
    code = ("import subprocess, sys\n"
            "child = subprocess.run([sys.executable, '-c', "
            "'import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)'])\n"
            "print('child ended with', child.returncode)")
    result = controller.submit(python(code))
    assert result.dry_run is not None and result.dry_run.exit_code == 0
    assert result.stdout == "child ended with -31\n"
    assert result.dry_run.seccomp_killed
    assert result.state is State.DENIED and "run.deny-tripwire" in result.reason
    assert spy.phases == [Phase.DRY_RUN]
