"""Many agents at once, and crashes: nothing lost, nothing doubled, nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import BIN, Server, make_server
from tests.conftest import owned_containers

pytestmark = pytest.mark.docker
TERMINAL = {"committed", "rolled_back", "quarantined", "denied"}


def verify_all(server: Server, tmp_path: Path, auditor: str) -> list[dict[str, object]]:
    with server.client(auditor) as client:
        receipts = client.get("/v1/receipts", params={"limit": 1000}).json()["receipts"]
        keys = client.get("/v1/keys").json()
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in receipts))
    (tmp_path / "keys.pem").write_text("".join(k["pem"] for k in keys))
    done = subprocess.run([str(BIN / "sandgate-verify"), str(tmp_path / "log.jsonl"), "--key",
                           str(tmp_path / "keys.pem")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:]
    return list(receipts)


def receipt_ids(receipts: list[dict[str, object]]) -> list[str]:
    import base64

    return [json.loads(base64.b64decode(str(r["payload"])))["predicate"]["submission_id"]
            for r in receipts]


def wait_terminal(client: httpx.Client, ids: list[str], timeout: float = 240) -> dict[str, str]:
    """Poll one listing a second (an auditor sees all), within the rate limit."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        page = client.get("/v1/submissions", params={"limit": 200})
        assert page.status_code == 200, page.text
        listed = {s["id"]: s["state"] for s in page.json()["submissions"]}
        states = {sid: listed.get(sid, "missing") for sid in ids}
        if set(states.values()) <= TERMINAL:
            return states
        time.sleep(1)
    raise AssertionError(f"not terminal after {timeout}s: {states}")


def test_200_concurrent_submissions_from_50_principals(tmp_path: Path) -> None:
    server = make_server(tmp_path, "load", workers="2", queue_size="30")
    names = [f"agent{i:02}" for i in range(50)]
    for name in names:
        server.principal(name)
    server.principal("audit", "auditor")
    server.start()
    try:
        def post(index: int) -> httpx.Response:
            name = names[index % 50]
            return httpx.post(f"{server.url}/v1/submissions", timeout=120,
                              headers={"Authorization": f"Bearer {server.keys[name]}"},
                              json={"language": "python", "code": f"print({index})",
                                    "workspace": f"ws-{name}"})

        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(post, range(200)))
        statuses = [a.status_code for a in answers]
        assert all(status in (202, 429, 503) for status in statuses), statuses
        refused = [a for a in answers if a.status_code != 202]
        assert refused, "a 32-slot queue cannot take 200 at once"
        assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]
        with server.client("audit") as auditor:
            states = wait_terminal(auditor, accepted)
            listed = auditor.get("/v1/submissions", params={"limit": 200}).json()
        reasons = {s["id"]: s["reason"] for s in listed["submissions"]}
        # Each principal's four submissions share its workspace: two running at once race to
        # commit, and the loser is rolled back with reason "conflict" — never anything else.
        assert "committed" in states.values()
        for sid, state in states.items():
            assert state == "committed" or (
                state == "rolled_back" and reasons[sid].startswith("conflict")), reasons[sid]
        receipts = verify_all(server, tmp_path, "audit")
        assert sorted(receipt_ids(receipts)) == sorted(accepted)  # exactly one each
    finally:
        server.stop()
    assert owned_containers(server.owner) == []


def test_kill_9_mid_run_then_restart_ends_everything_safely(tmp_path: Path) -> None:
    server = make_server(tmp_path, "crash", workers="2")
    server.principal("agent")
    server.principal("audit", "auditor")
    server.start()
    ids = []
    with server.client("agent") as client:
        for n in range(6):
            answer = client.post("/v1/submissions", json={
                "language": "python", "workspace": "crashy",
                "code": f"import time\nopen('f{n}', 'w').write('x')\ntime.sleep(1.5)"})
            assert answer.status_code == 202
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + 30
        while client.get(f"/v1/submissions/{ids[0]}").json()["state"] in ("received", "dry_run"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    server.start()  # reconciles on start
    try:
        with server.client("audit") as auditor:
            states = wait_terminal(auditor, ids)
            workspace = auditor.get("/v1/workspaces/crashy", params={"owner": "agent"}).json()
        assert set(states.values()) <= TERMINAL
        assert "denied" in states.values() or "rolled_back" in states.values()
        receipts = verify_all(server, tmp_path, "audit")
        assert sorted(receipt_ids(receipts)) == sorted(ids)
        tree = server.data / "workspaces" / "@agent" / "crashy" / "v"
        versions_on_disk = sorted(int(p.name) for p in tree.iterdir())
        assert versions_on_disk == list(range(workspace["version"] + 1))
        assert workspace["version"] == list(states.values()).count("committed")
    finally:
        server.stop()
    assert owned_containers(server.owner) == []


def test_sigterm_drains_in_flight_runs(tmp_path: Path) -> None:
    server = make_server(tmp_path, "drain", workers="1")
    server.principal("agent")
    server.start()
    with server.client("agent") as client:
        sid = client.post("/v1/submissions", json={
            "language": "python", "code": "import time\ntime.sleep(1)\nprint('done')"}).json()["id"]
        time.sleep(0.3)
    server.stop(signal.SIGTERM)
    assert server.process is None
    server.start()
    try:
        with server.client("agent") as client:
            final = client.get(f"/v1/submissions/{sid}").json()
        assert final["state"] == "committed", final["reason"]
    finally:
        server.stop()
