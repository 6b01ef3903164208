"""Attacks 2, 3 and 9: huge outputs, huge label keys, and two tenants' ``default``.

Before the fix a run's whole output lived in its view (1 MiB of invalid UTF-8 on each
stream made a 6.3 MB view), label keys had no bound (a 20 MB key went into the record and
the receipt), and workspace names were global: the second agent to use ``default`` got 404s.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server
from tests.load.conftest import TERMINAL, start, stop, submit_retrying, wait_states

pytestmark = pytest.mark.docker

OUTPUT = 1 << 20  # the standard profile's output_bytes: at the cap, not past it
SPILL = f"import os\nos.write(1, b'\\xff' * {OUTPUT})\nos.write(2, b'\\xfe' * {OUTPUT})\n"
PREVIEW = 16 << 10
BURST = 20


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory.mktemp("tenants"), "tenants", {
        "alice": "agent", "bob": "agent", "audrey": "auditor"},
        workers="2", max_running_per_principal="1", policy_watch_s="0", rate_per_s="1000",
        rate_burst="1000", max_body_bytes=str(32 << 20))
    try:
        yield server
    finally:
        stop(server)


def _output(client: httpx.Client, sid: str, stream: str, page: int,
            phase: str | None = None) -> tuple[bytes, set[str]]:
    """A run's whole output, ``page`` bytes at a time, and the sizes the pages announced."""
    data = b""
    sizes: set[str] = set()
    while True:
        params: dict[str, str | int] = {"offset": len(data), "limit": page}
        if phase is not None:
            params["phase"] = phase
        answer = client.get(f"/v1/submissions/{sid}/outputs/{stream}", params=params)
        assert answer.status_code == 200, answer.text[:500]
        sizes.add(answer.headers["Sandgate-Output-Size"])
        data += answer.content
        if len(answer.content) < page:
            return data, sizes


def test_a_mebibyte_of_invalid_utf8_makes_a_small_view_and_exact_bytes(tenants: Server) -> None:
    with tenants.client("alice") as alice:
        answer = submit_retrying(alice, {"language": "python", "code": SPILL,
                                         "workspace": "spill"}, wait=30)
        assert answer.status_code == 202, answer.text[:500]
        view = wait_states(alice, [answer.json()["id"]], TERMINAL)[answer.json()["id"]]
        sid = str(view["id"])
        again = alice.get(f"/v1/submissions/{sid}")
        assert len(again.content) < 300_000, len(again.content)
        assert len(answer.content) < 300_000, len(answer.content)
        shown: Any = again.json()
        for stream in ("stdout", "stderr"):
            assert len(shown[stream]) <= PREVIEW  # one character per undecodable byte at most
        expected = {"stdout": b"\xff" * OUTPUT, "stderr": b"\xfe" * OUTPUT}
        for phase in ("dry_run", "bounded_run"):
            if shown[phase] is None:
                pytest.fail(f"{sid} ended {shown['state']} without a {phase}: {shown['reason']}")
            for stream, wanted in expected.items():
                got, sizes = _output(alice, sid, stream, 300_000,
                                     "dry_run" if phase == "dry_run" else "bounded")
                assert sizes == {str(OUTPUT)}
                assert got == wanted, (stream, phase, len(got))
                assert hashlib.sha256(got).hexdigest() == shown[phase][stream]["sha256"]
        last, _ = _output(alice, sid, "stdout", OUTPUT)  # the last run's, in one page
        assert last == expected["stdout"]


def test_huge_label_keys_are_refused_and_receipts_stay_small(tenants: Server) -> None:
    """Keys of 1,000 characters, 1 MiB and 20 MB (under this server's 32 MiB body cap) are
    each a small 422; a print(1) with the most labels allowed has a small receipt."""
    with tenants.client("alice") as alice:
        for chars in (1000, 1 << 20, 20_000_000):
            answer = alice.post("/v1/submissions", json={
                "language": "python", "code": "print(1)", "workspace": "labels",
                "labels": {"k" * chars: "v"}})
            assert answer.status_code == 422, (chars, answer.text[:500])
            assert len(answer.content) < 64 << 10, (chars, len(answer.content))
        listed = alice.get("/v1/submissions", params={"limit": 200}).json()["submissions"]
        assert all(s["workspace"] != "labels" for s in listed)
        labels = {f"{index:02d}" + "k" * 61: "v" * 256 for index in range(32)}
        answer = submit_retrying(alice, {"language": "python", "code": "print(1)",
                                         "workspace": "labelled", "labels": labels}, wait=30)
        assert answer.status_code == 202, answer.text[:500]
        sid = answer.json()["id"]
        wait_states(alice, [sid], TERMINAL)
        receipt = alice.get(f"/v1/receipts/{sid}")
        view = alice.get(f"/v1/submissions/{sid}")
    assert receipt.status_code == 200, receipt.text[:500]
    assert len(receipt.content) < 64 << 10, len(receipt.content)
    assert len(view.content) < 64 << 10, len(view.content)
    statement = json.loads(base64.b64decode(receipt.json()["payload"]))
    assert statement["predicate"]["request"]["labels"] == labels


def test_two_agents_commit_to_their_own_default_at_once(tenants: Server) -> None:
    def post(job: tuple[str, int]) -> httpx.Response:
        name, index = job
        code = (f"open('mine.txt', 'w').write('{name} {index}')\n"
                f"open('{name}-only.txt', 'w').write('{name}')\n")
        with tenants.client(name) as client:
            return submit_retrying(client, {"language": "python", "code": code})

    jobs = [(name, index) for index in range(BURST) for name in ("alice", "bob")]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(post, jobs))
    assert [a.status_code for a in answers] == [202] * len(jobs), [
        (a.status_code, a.text[:200]) for a in answers if a.status_code != 202]
    ids = [str(a.json()["id"]) for a in answers]
    with tenants.client("audrey") as auditor:
        views = wait_states(auditor, ids, TERMINAL, timeout=240)
    states = {sid: (str(views[sid]["state"]), str(views[sid]["reason"])) for sid in ids}
    assert all(state == "committed" or (state == "rolled_back" and reason.startswith(
        "conflict")) for state, reason in states.values()), states
    for name, other in (("alice", "bob"), ("bob", "alice")):
        commits = sum(1 for (who, _), sid in zip(jobs, ids, strict=True)
                      if who == name and states[sid][0] == "committed")
        with tenants.client(name) as client:
            workspace = client.get("/v1/workspaces/default")
            assert workspace.status_code == 200, workspace.text[:500]
            assert workspace.json()["version"] == commits >= 1
            mine = client.get("/v1/workspaces/default/files/mine.txt")
            assert mine.status_code == 200 and mine.text.startswith(f"{name} "), mine.text
            own = client.get(f"/v1/workspaces/default/files/{name}-only.txt")
            assert own.status_code == 200 and own.text == name
            theirs = client.get(f"/v1/workspaces/default/files/{other}-only.txt")
            assert theirs.status_code == 404, theirs.text[:500]
    # Each principal runs one submission at a time here (max_running_per_principal=1), so
    # no two of its runs can race for its workspace.
    conflicts = {sid: reason for sid, (state, reason) in states.items() if state != "committed"}
    assert not conflicts, conflicts
