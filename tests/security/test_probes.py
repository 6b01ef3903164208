"""The probe battery on the real sandbox, and proof that weakening it is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.fs.trees import hand_to_sandbox
from controller.adapters.runtime.docker import DockerRuntime
from controller.core.models import Phase
from controller.core.ports import RunSpec, SandboxRuntime
from controller.errors import ContainerAuditError
from controller.tools.battery import run_battery, select
from tests.conftest import make_controller

pytestmark = pytest.mark.docker


def weaken(profile: Any, allow: str) -> Any:
    """A copy of ``profile`` that allows ``allow`` outright (and no longer trips on it)."""
    seccomp = json.loads(json.dumps(profile.seccomp))
    for rule in seccomp["syscalls"]:
        rule["names"] = [name for name in rule["names"] if name != allow]
    seccomp["syscalls"] = [rule for rule in seccomp["syscalls"] if rule["names"]]
    seccomp["syscalls"].append({"names": [allow], "action": "SCMP_ACT_ALLOW"})
    tripwires = tuple(t for t in profile.tripwires if t != allow)
    return profile.model_copy(update={"seccomp": seccomp, "tripwires": tripwires})


def test_allowing_unshare_makes_the_namespace_probe_fail(tmp_path: Path,
                                                         docker_runtime: SandboxRuntime) -> None:
    controller = make_controller(tmp_path / "data", docker_runtime)
    standard = controller.profiles["standard"]
    probes = select("^unshare-user-namespace$")
    [before] = run_battery(controller, "standard", probes)
    assert before.contained and "SIGSYS" in before.observed
    controller.profiles["standard"] = weaken(standard, "unshare")
    [after] = run_battery(controller, "standard", probes)
    assert not after.contained
    assert "result: errno none" in after.observed  # the namespace really was created
    assert after.expected.kind == "breach"


class CapAddingRuntime(DockerRuntime):
    """A runtime someone 'helpfully' changed to add CAP_SYS_ADMIN."""

    def _create_args(self, spec: RunSpec, parent: str | None = None, hosts: Path | None = None
                     ) -> dict[str, Any]:
        return {**super()._create_args(spec, parent, hosts), "cap_add": ["SYS_ADMIN"]}


def test_adding_cap_sys_admin_fails_the_audit_and_nothing_starts(tmp_path: Path) -> None:
    runtime = CapAddingRuntime(owner="sandgate")
    controller = make_controller(tmp_path / "data", runtime)
    work, code = tmp_path / "w", tmp_path / "c"
    work.mkdir()
    code.mkdir()
    (code / "main.py").write_text("print('should never run')")
    hand_to_sandbox(work)
    profile = controller.profiles["standard"]
    spec = RunSpec(submission_id="audit-test", phase=Phase.DRY_RUN, profile=profile,
                   command=("python3", "/sandbox/main.py"), workspace_dir=work, code_dir=code,
                   image=runtime.image_id(profile.image))
    with pytest.raises(ContainerAuditError, match=r"5\.3 all capabilities dropped"):
        runtime.run(spec)
    assert runtime.client.containers.list(all=True, filters={
        "label": "dev.sandgate.submission=audit-test"}) == []
    from tests.conftest import python

    result = controller.submit(python("print('x')"))
    assert result.state.value == "denied" and "configuration audit" in result.reason
    runtime.client.close()


def test_probe_cli_reports_and_writes_junit(tmp_path: Path) -> None:
    junit, report = tmp_path / "probe.xml", tmp_path / "probe.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sandgate"), "probe", "--profile", "strict",
         "--only", "identity|syscall-ptrace|write-root", "--junit", str(junit), "--json",
         str(report)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    data = json.loads(report.read_text())
    assert data["profile"] == "strict" and data["breaches"] == 0
    assert len(data["probes"]) >= 9
    assert 'failures="0"' in junit.read_text()
