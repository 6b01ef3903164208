"""When receipts cannot be made, no work is taken: an unreadable key, a full disk."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from controller.adapters.runtime.docker import DockerRuntime
from controller.core.lifecycle import TERMINAL
from controller.core.models import State, Submission
from controller.errors import SandgateError
from tests.api.conftest import make_server
from tests.chaos.conftest import Site
from tests.conftest import make_controller, python

pytestmark = pytest.mark.docker


def test_an_unreadable_signing_key_refuses_new_work_with_503(tmp_path: Path) -> None:
    server = make_server(tmp_path, "nokey")
    server.principal("agent")
    server.start()
    try:
        keys = server.data / "keys"
        hidden = tmp_path / "hidden-keys"
        with server.client("agent") as client:
            assert client.post("/v1/submissions?wait=30",
                               json={"language": "python", "code": "print(1)"}
                               ).json()["state"] == "committed"
            shutil.move(keys, hidden)
            refused = client.post("/v1/submissions", json={"language": "python",
                                                           "code": "print(2)"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"
            assert "cannot be signed" in refused.json()["error"]["message"]
            assert int(refused.headers["Retry-After"]) >= 1
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["signing_key"] != "ok"
            listed = client.get("/v1/submissions").json()["submissions"]
            assert len(listed) == 1  # the refusal created nothing
            shutil.move(hidden, keys)
            again = client.post("/v1/submissions?wait=30",
                                json={"language": "python", "code": "print(3)"})
            assert again.json()["state"] == "committed"
    finally:
        server.stop()


def test_a_full_disk_loses_nothing_and_recovers(site: Site, tmp_path: Path) -> None:
    mount = site.data
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    try:
        runtime = DockerRuntime(owner=site.owner)
        controller = make_controller(site.data, runtime)
        assert controller.submit(python("print('before')")).state is State.COMMITTED
        accepted = controller.accept(python("open('x', 'w').write('y' * 1000)"))
        filler = mount / "filler"
        with filler.open("wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC: the disk is full now
        try:
            outcome: Submission | None = controller.process(accepted)
        except (SandgateError, OSError, sqlite3.Error):
            outcome = None  # could not even record its end: reconciliation will
        stuck = controller.store.get(accepted.id)
        assert stuck is not None
        if outcome is None:
            assert stuck.state not in TERMINAL and stuck.receipt_seq is None
        filler.unlink()
        controller.reconcile()
        final = controller.store.get(accepted.id)
        assert final is not None and final.state in (State.DENIED, State.ROLLED_BACK)
        controller.store.close()
        runtime.client.close()
        assert site.invariants() == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
