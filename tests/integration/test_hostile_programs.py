"""Programs that attack the controller's bookkeeping rather than the sandbox, on the real
engine: each ends in a decision naming its cause, with a receipt that verifies."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from controller.adapters.runtime.docker import DockerRuntime
from controller.adapters.signing import KeyRing
from controller.core.models import Phase, State, Submission, SubmissionRequest
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python
from tests.integration.conftest import LocalController

pytestmark = pytest.mark.docker


def log_verifies(controller: LocalController, data: Path) -> int:
    pem = "".join(k.pem for k in KeyRing(data / "keys").public_keys()).encode()
    report = verify_log([e for _, e in controller.store.receipts()], load_public_keys(pem))
    assert report.ok, report.problems
    return report.checked


def in_the_real_run_only(body: str, controller: LocalController) -> str:
    """``body`` runs only in the real run: the runs are 3 s apart, and the code reads the
    wall clock (as any code can: binding, not hiding, is the defence)."""
    switch = time.time() + 1.5

    def pause(submission: Submission) -> None:
        if submission.state is State.ASSESSING:
            time.sleep(3)

    controller.listeners.append(pause)
    return f"import time\nif time.time() > {switch}:\n" + "".join(
        f"    {line}\n" for line in body.splitlines())


def test_a_sparse_file_is_capped_by_rlimit_fsize(controller: LocalController) -> None:
    result = controller.submit(python(
        "import errno, os\nopen('big', 'w').close()\n"
        "try:\n    os.truncate('big', 1 << 60)\nexcept OSError as exc:\n"
        "    print(errno.errorcode[exc.errno])\n"))
    assert result.state is State.COMMITTED, result.reason
    assert result.stdout == "EFBIG\n"


def test_a_sparse_file_past_json_integers_ends_with_a_receipt_and_a_restart(
        tmp_path: Path, docker_runtime: DockerRuntime, quick_profiles: Path) -> None:
    # A profile that lets one file be as large as the kernel allows: the size reaches the
    # record, the policy context and the receipt.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    raw = yaml.safe_load((quick_profiles / "standard.yaml").read_text())
    raw["limits"]["file_bytes"] = 2**63 - 1
    (profiles / "standard.yaml").write_text(yaml.safe_dump(raw))
    data = tmp_path / "data"
    controller = make_controller(data, docker_runtime, profiles_dir=profiles)
    result = controller.submit(python("import os\nopen('big', 'w').close()\n"
                                      "os.truncate('big', 1 << 60)\n"))
    assert result.state is State.ROLLED_BACK, result.reason
    assert "workspace_bytes" in result.reason
    assert result.bounded_run_diff is not None
    assert result.bounded_run_diff.size_after == 1 << 60
    assert log_verifies(controller, data) == 1
    controller.store.close()
    restarted = make_controller(data, docker_runtime, profiles_dir=profiles)
    assert restarted.reconcile() == [] and restarted.store.unfinished() == []
    restarted.store.close()


def test_exit_137_after_planting_an_escaping_symlink_is_a_quarantine(
        controller: LocalController) -> None:
    code = in_the_real_run_only(
        "import os\nos.symlink('/etc/shadow', 'escape')\nos._exit(137)", controller)
    result = controller.submit(python(code))
    assert result.state is State.QUARANTINED, result.reason
    assert "symlink leaving the workspace: escape" in result.reason
    assert "killed from outside" not in result.reason and "infrastructure" not in result.reason
    assert result.bounded_run is not None and result.bounded_run.exit_code == 137


def test_a_name_that_is_not_utf8_commits_with_its_bytes(controller: LocalController) -> None:
    result = controller.submit(python("open(b'caf\\xe9\\x1b[0m', 'w').write('x')"))
    assert result.state is State.COMMITTED, result.reason
    assert result.bounded_run_diff is not None
    assert [c["path"] for _, c in controller.store.changes(result.id, Phase.BOUNDED)] == [
        "caf%E9%1B[0m"]
    version = controller.workspaces.version_dir("@local/default", 1)
    assert os.listdir(os.fsencode(version)) == [b"caf\xe9\x1b[0m"]


CHILD_PTRACE = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pid = os.fork()
    if pid == 0:
        libc.syscall(101, 0, 0, 0, 0)  # ptrace: a tripwire, the child is killed
        os._exit(0)
    os.waitpid(pid, 0)
print("the parent carried on")
"""


def test_a_tenant_calling_tripwires_never_gets_another_tenants_runs_denied(
        tmp_path: Path, docker_runtime: DockerRuntime, quick_profiles: Path) -> None:
    controller = make_controller(tmp_path / "data", docker_runtime, profiles_dir=quick_profiles)
    hostile: list[Submission] = []
    attacker = threading.Thread(target=lambda: hostile.append(controller.submit(
        SubmissionRequest(language=python("").language, agent="mallory",
                          workspace="mallory", code=CHILD_PTRACE.format(seconds=2.5)))))
    attacker.start()
    time.sleep(0.8)  # its children are being killed now
    innocent: list[Submission] = []
    while attacker.is_alive() and len(innocent) < 8:
        innocent.append(controller.submit(SubmissionRequest(
            language=python("").language, agent="alice", workspace="alice",
            code="print(1)")))
    attacker.join()
    assert innocent and all(r.state is State.COMMITTED for r in innocent), [
        (r.state, r.reason) for r in innocent]
    [mallory] = hostile
    assert mallory.state is State.DENIED and mallory.dry_run is not None
    assert mallory.dry_run.seccomp_killed


SELF_FILTER_THEN_CHILD_TRIPWIRE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
log_everything = (Filter * 1)(Filter(0x06, 0, 0, 0x7FFC0000))  # BPF_RET | K: SECCOMP_RET_LOG
program = Program(1, log_everything)
print("prctl", libc.prctl(22, 2, ctypes.byref(program), 0, 0), ctypes.get_errno())
for _ in range(12000):
    os.getppid()  # each would be an audit record, had the filter been installed
pid = os.fork()
if pid == 0:
    libc.syscall(101, 0, 0, 0, 0)
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("profile", ["standard", "strict"])
def test_a_child_tripwire_cannot_be_hidden_behind_a_flood(controller: LocalController,
                                                          profile: str) -> None:
    result = controller.submit(SubmissionRequest(
        language=python("").language, profile=profile, code=SELF_FILTER_THEN_CHILD_TRIPWIRE))
    assert result.state is not State.COMMITTED
    assert result.dry_run is not None and result.dry_run.seccomp_killed, result.reason
    assert result.stdout.startswith("prctl -1 ")  # the sandbox installs no filter of its own


def test_resource_figures_come_from_the_kernels_counters(controller: LocalController) -> None:
    # Runs shorter than one sampling period, and workers that live a few milliseconds: the
    # run's parent cgroup outlives the container and holds the kernel's own peaks and totals.
    quick = controller.submit(python("pass"))
    pool = controller.submit(python(
        "import multiprocessing as m\nwith m.Pool(2) as p:\n    print(p.map(abs, [-1, -2]))"))
    for result in (quick, pool):
        assert result.state is State.COMMITTED, result.reason
        for run in (result.dry_run, result.bounded_run):
            assert run is not None and run.audit_source.value == "audit_netlink"
            assert run.peak_memory_bytes and run.cpu_time_ns and run.peak_pids
            assert run.uid == result.sandbox_uid
    assert pool.bounded_run is not None and pool.bounded_run.peak_pids is not None
    assert pool.bounded_run.peak_pids >= 3  # the parent and its two workers at least
