"""SIGKILL the controller at every state boundary, restart, and check every invariant."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from docker.models.containers import Container

from controller.adapters.runtime.docker import DockerRuntime
from controller.core.models import Phase, State, Submission
from controller.core.ports import OWNER_LABEL, PHASE_LABEL, SUBMISSION_LABEL
from tests.chaos.conftest import Site
from tests.conftest import make_controller, python

pytestmark = pytest.mark.docker
CODE = "open('made-by-the-run.txt', 'w').write('x')\nprint('ran')\n"
CRASH_POINTS = {
    "received": State.DENIED, "dry_run": State.DENIED, "assessing": State.DENIED,
    "running": State.ROLLED_BACK, "validating": State.ROLLED_BACK,
    "committing": State.ROLLED_BACK, "published": State.ROLLED_BACK,
    "sealed": State.COMMITTED,
}


@pytest.mark.parametrize(("point", "final"), CRASH_POINTS.items())
def test_sigkill_at_each_boundary_then_restart(site: Site, tmp_path: Path, point: str,
                                               final: State) -> None:
    (tmp_path / "job.py").write_text(CODE)
    crashed = site.sandgate("run", str(tmp_path / "job.py"), "--json",
                            SANDGATE_CRASH_AT=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    recovered = site.sandgate("reconcile")
    assert recovered.returncode == 0, recovered.stderr
    expected = "reconciled 0" if final is State.COMMITTED else "reconciled 1"
    assert expected in recovered.stdout, recovered.stdout
    assert site.invariants() == []
    from controller.adapters.store.submissions import Store

    store = Store(site.settings.db_path)
    [sub] = store.submissions(agent=None)
    assert sub.state is final, sub.reason
    version = store.workspace_version("default")
    store.close()
    assert version == (1 if final is State.COMMITTED else 0)
    made = site.settings.workspaces_dir / "@local" / "default" / "v" / "1" / "made-by-the-run.txt"
    assert made.exists() is (final is State.COMMITTED)


def _running(runtime: DockerRuntime, phase: Phase) -> list[Container]:
    found = runtime.client.containers.list(filters={
        "label": [f"{PHASE_LABEL}={phase.value}", f"{OWNER_LABEL}={runtime.owner}"],
        "status": "running"})
    return [c for c in found if c.labels.get(SUBMISSION_LABEL)]


def _kill_when(runtime: DockerRuntime, phase: Phase, after: float) -> None:
    """From outside: SIGKILL this controller's container of ``phase`` once its code runs
    (the bounded run's is started beside the dry run, and waits until that one is gone)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _running(runtime, Phase.DRY_RUN):
        time.sleep(0.02)
    while (phase is Phase.BOUNDED and time.monotonic() < deadline
           and _running(runtime, Phase.DRY_RUN)):
        time.sleep(0.02)
    mine = _running(runtime, phase)
    if mine:
        time.sleep(after)
        mine[0].kill()


@pytest.mark.parametrize(("phase", "final"), [(Phase.DRY_RUN, State.DENIED),
                                              (Phase.BOUNDED, State.ROLLED_BACK)])
def test_a_container_killed_from_outside_ends_safely(site: Site, phase: Phase,
                                                     final: State) -> None:
    runtime = DockerRuntime(owner=site.owner)
    controller = make_controller(site.data, runtime)
    killer = threading.Thread(target=_kill_when, args=(runtime, phase, 0.5), daemon=True)
    killer.start()
    result: Submission = controller.submit(python(
        "import time\nopen('f', 'w').write('x')\ntime.sleep(4)\nprint('done')"))
    killer.join(timeout=30)
    assert result.state is final, result.reason
    assert "killed from outside" in result.reason
    assert controller.store.workspace_version("default") == 0
    controller.store.close()
    runtime.client.close()
    assert site.invariants() == []
