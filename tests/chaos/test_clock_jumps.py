"""The wall clock jumps an hour forward and back under running sandboxes: deadlines hold,
because they run on the monotonic clock."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from controller.adapters.runtime.docker import DockerRuntime
from controller.core.models import State, SubmissionRequest
from tests.chaos.conftest import Site
from tests.conftest import ROOT, make_controller

pytestmark = pytest.mark.docker


def set_clock(moment: datetime) -> None:
    done = subprocess.run(["date", "-u", "-s", moment.strftime("%Y-%m-%d %H:%M:%S.%f")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@contextmanager
def restored_clock() -> Iterator[None]:
    """Whatever the test does to the clock, put it back (real time, kept by monotonic)."""
    wall, mono = datetime.now(UTC), time.monotonic()
    try:
        yield
    finally:
        set_clock(wall + timedelta(seconds=time.monotonic() - mono))


@pytest.mark.parametrize("jump", [timedelta(hours=1), timedelta(hours=-1)])
def test_a_clock_jump_neither_cuts_nor_stretches_a_deadline(site: Site, tmp_path: Path,
                                                            jump: timedelta) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    raw = yaml.safe_load((ROOT / "profiles" / "standard.yaml").read_text())
    raw["seccomp"] = str((ROOT / "profiles" / raw["seccomp"]).resolve())
    raw["limits"]["wall_time_s"] = 4
    (profiles / "standard.yaml").write_text(yaml.safe_dump(raw))
    runtime = DockerRuntime(owner=site.owner)
    controller = make_controller(site.data, runtime, profiles_dir=profiles)

    def jump_mid_run() -> None:
        time.sleep(1.5)
        set_clock(datetime.now(UTC) + jump)

    with restored_clock():
        jumper = threading.Thread(target=jump_mid_run)
        started = time.monotonic()
        jumper.start()
        spin = controller.submit(SubmissionRequest(language="python",
                                                   code="while True:\n    pass\n"))
        jumper.join()
        elapsed = time.monotonic() - started
    assert spin.state is State.DENIED and "wall_time" in spin.reason
    assert spin.dry_run is not None
    assert 3500 <= spin.dry_run.wall_time_ms <= 9000, spin.dry_run.wall_time_ms
    assert elapsed < 30
    controller.store.close()
    runtime.client.close()
    assert site.invariants() == []
