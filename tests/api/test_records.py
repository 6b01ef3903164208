"""Records over HTTP: summaries in listings, whole diffs and outputs a page at a time, and
workspace names that belong to their principal."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785

from tests.api.conftest import Server

pytestmark = pytest.mark.docker

MANY = """
import os
for d in range(30):
    os.makedirs(f"d{d:02}", exist_ok=True)
    for f in range(40):
        open(f"d{d:02}/{f:03}" + "n" * 150, "w").write("x")
"""


def test_a_diff_is_paged_and_its_pages_are_what_the_receipt_binds(server: Server) -> None:
    with server.client("alice") as alice:
        done = alice.post("/v1/submissions?wait=60", json={
            "language": "python", "code": MANY, "workspace": "paged"}).json()
        assert done["state"] == "committed", done["reason"]
        summary = done["bounded_run"]["diff"]
        assert summary["created"] == 30 * 41
        changes: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = alice.get(f"/v1/submissions/{done['id']}/diff", params=params).json()
            changes += page["changes"]
            if (cursor := page["next_cursor"]) is None:
                break
        assert len(changes) == summary["created"]
        digest = hashlib.sha256(rfc8785.dumps(changes)).hexdigest()
        assert digest == summary["changes_sha256"] == page["summary"]["changes_sha256"]
        listed = alice.get("/v1/submissions", params={"limit": 5}).json()["submissions"]
        line = next(item for item in listed if item["id"] == done["id"])
        assert line["changed"] == 30 * 41 and "decisions" not in line
        dry = alice.get(f"/v1/submissions/{done['id']}/diff",
                        params={"phase": "dry_run", "limit": 1}).json()
        assert dry["phase"] == "dry_run" and len(dry["changes"]) == 1
    with server.client("bob") as bob:  # another tenant's diff is not found
        assert bob.get(f"/v1/submissions/{done['id']}/diff").status_code == 404


def test_outputs_are_previewed_and_served_whole_as_bytes(server: Server) -> None:
    code = "import os\nos.write(1, b'\\xff' * 100000 + b'end')\nos.write(2, b'err')\n"
    with server.client("alice") as alice:
        done = alice.post("/v1/submissions?wait=60", json={
            "language": "python", "code": code, "workspace": "noisy"}).json()
        assert done["state"] == "committed", done["reason"]
        assert done["stdout"] == "\ufffd" * (16 << 10) and done["stderr"] == "err"
        whole = alice.get(done["links"]["stdout"])
        assert whole.content == b"\xff" * 100000 + b"end"
        assert whole.headers["sandgate-output-size"] == "100003"
        tail = alice.get(done["links"]["stdout"], params={"offset": 100000, "limit": 10})
        assert tail.content == b"end"
        assert alice.get(done["links"]["code"]).text == code
    with server.client("bob") as bob:
        assert bob.get(done["links"]["stdout"]).status_code == 404


def test_two_agents_each_commit_to_their_own_default(server: Server) -> None:
    for agent in ("alice", "bob"):
        with server.client(agent) as client:
            done = client.post("/v1/submissions?wait=60", json={
                "language": "python", "code": f"open('who.txt', 'w').write('{agent}')"}).json()
            assert done["state"] == "committed", done["reason"]
    for agent in ("alice", "bob"):
        with server.client(agent) as client:
            assert client.get("/v1/workspaces/default/files/who.txt").text == agent
            other = "bob" if agent == "alice" else "alice"
            assert client.get("/v1/workspaces/default",
                              params={"owner": other}).status_code == 404
    with server.client("audrey") as auditor:
        for agent in ("alice", "bob"):
            found = auditor.get("/v1/workspaces/default/files/who.txt",
                                params={"owner": agent})
            assert found.text == agent


def test_label_keys_have_a_shape(server: Server) -> None:
    with server.client("alice") as alice:
        for labels in ({"k" * 5000: "v"}, {"a b": "v"}):
            refused = alice.post("/v1/submissions", json={
                "language": "python", "code": "print(1)", "labels": labels})
            assert refused.status_code == 422
