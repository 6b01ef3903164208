"""`profiles learn` on a real sandbox: the proposal is narrower than the ceiling, and the
workload it was learned from runs under it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controller.core.models import State
from controller.core.ports import SandboxRuntime
from controller.profiles.learn import allowed_names
from controller.profiles.lint import lint_profile
from controller.profiles.load import load_profile
from tests.conftest import ROOT, make_controller, python

pytestmark = pytest.mark.docker
WORKLOAD = "import json\nopen('out.json', 'w').write(json.dumps({'learned': True}))\nprint('ok')\n"


def test_learned_profile_runs_the_workload(tmp_path: Path,
                                           docker_runtime: SandboxRuntime) -> None:
    (tmp_path / "work.py").write_text(WORKLOAD)
    proposal = tmp_path / "learned.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sandgate"), "profiles", "learn", "--against",
         "standard", "--out", str(proposal), "--", str(tmp_path / "work.py")],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "- allow" in done.stdout  # printed as a diff against the ceiling
    seccomp = json.loads(proposal.read_text())
    ceiling = load_profile(ROOT / "profiles" / "standard.yaml")
    learned = allowed_names(seccomp)
    assert {"read", "write", "openat", "execve"} <= learned
    assert learned < allowed_names(ceiling.seccomp)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    raw = yaml.safe_load((ROOT / "profiles" / "standard.yaml").read_text())
    raw.update(name="learned", seccomp=str(proposal))
    (profiles / "learned.yaml").write_text(yaml.safe_dump(raw))
    assert [f for f in lint_profile(profiles / "learned.yaml") if f.level == "error"] == []
    controller = make_controller(tmp_path / "data", docker_runtime, profiles_dir=profiles)
    result = controller.submit(python(WORKLOAD, profile="learned"))
    assert result.state is State.COMMITTED, result.reason
    assert result.stdout == "ok\n"
    version = controller.workspaces.version_dir("@local/default", 1)
    assert json.loads((version / "out.json").read_text()) == {"learned": True}
