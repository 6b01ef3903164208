"""Human approval and policy reload over HTTP, on the real service."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Server, make_server
from tests.conftest import bundle_with, parking_rule

pytestmark = pytest.mark.docker
PARK_RULE = parking_rule(3)
MANY_FILES = "for i in range(5):\n    open(f'n{i}', 'w').write('x')"


@pytest.fixture(scope="module")
def approving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("approvals")
    bundle = bundle_with(tmp, "bundle", PARK_RULE)
    server = make_server(tmp, "approvals", policy_dir=str(bundle), approval_ttl_s="4",
                         policy_watch_s="0")
    for name, role in (("agent", "agent"), ("carol", "approver"), ("root", "admin"),
                       ("audrey", "auditor")):
        server.principal(name, role)
    server.start()
    yield server
    server.stop()


def wait_state(server: Server, who: str, sid: str, states: set[str],
               timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    with server.client(who) as client:
        while time.monotonic() < deadline:
            found = client.get(f"/v1/submissions/{sid}").json()
            if found["state"] in states:
                return dict(found)
            time.sleep(0.3)
    raise AssertionError(f"{sid} never reached {states}")


def park(server: Server, workspace: str) -> str:
    """A submission parked for approval (a fresh workspace, so its files are all new)."""
    with server.client("agent") as agent:
        answer = agent.post("/v1/submissions?wait=30",
                            json={"language": "python", "code": MANY_FILES,
                                  "workspace": workspace})
    assert answer.json()["state"] == "awaiting_approval", answer.json()["reason"]
    return str(answer.json()["id"])


def test_approve_runs_and_commits_with_the_approver_in_the_receipt(approving: Server) -> None:
    sid = park(approving, "ws-approve")
    with approving.client("carol") as carol, approving.client("agent") as agent:
        waiting = carol.get("/v1/approvals").json()
        request = next(r for r in waiting if r["submission"]["id"] == sid)
        assert request["code"] == MANY_FILES
        assert request["waiting_because"][0]["id"] == "run_unattended.many-new-files"
        assert len(request["dry_run_changes"]) == 5
        assert agent.get("/v1/approvals").status_code == 403
        own = agent.post(f"/v1/submissions/{sid}/approval", json={"approve": True,
                                                                   "reason": "mine"})
        assert own.status_code == 403
        answered = carol.post(f"/v1/submissions/{sid}/approval",
                              json={"approve": True, "reason": "expected output"})
        assert answered.status_code == 200, answered.text
    final = wait_state(approving, "agent", sid, {"committed", "rolled_back", "denied"})
    assert final["state"] == "committed", final["reason"]
    with approving.client("agent") as agent:
        envelope = agent.get(f"/v1/receipts/{sid}").json()
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    assert predicate["approval"]["approver"] == "carol"
    assert predicate["approval"]["reason"] == "expected output"


def test_reject_denies_and_silence_expires(approving: Server) -> None:
    rejected, ignored = park(approving, "ws-reject"), park(approving, "ws-ignore")
    with approving.client("carol") as carol:
        answer = carol.post(f"/v1/submissions/{rejected}/approval",
                            json={"approve": False, "reason": "too many files"})
        assert answer.json()["state"] == "denied"
        again = carol.post(f"/v1/submissions/{rejected}/approval",
                           json={"approve": True, "reason": "changed my mind"})
        assert again.status_code == 422
    expired = wait_state(approving, "agent", ignored, {"denied"}, timeout=30)
    assert "approval expired" in str(expired["reason"])


def test_reload_over_http_refuses_a_typo_and_keeps_deciding(approving: Server,
                                                            tmp_path: Path) -> None:
    with approving.client("root") as admin, approving.client("audrey") as auditor:
        assert auditor.post("/v1/policies/reload").status_code == 403
        before = admin.get("/v1/policies").json()["digest"]
        bundle = Path(str(approving.env["SANDGATE_POLICY_DIR"]))
        rules = bundle / "policies" / "commit.cedar"
        original = rules.read_text()
        rules.write_text(original.replace("context.diff.deleted", "context.diff.deletd"))
        try:
            refused = admin.post("/v1/policies/reload")
            assert refused.status_code == 422
            message = refused.json()["error"]["message"]
            assert "commit.cedar" in message and "commit.rollback-mass-delete" in message
            assert admin.get("/v1/policies").json()["digest"] == before
        finally:
            rules.write_text(original)
        assert admin.post("/v1/policies/reload").json()["digest"] == before
