"""Human approval over the API: a parked submission approved commits, rejected is denied;
an agent never answers for its own submission."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio
ANSWER = "/v1/submissions/{}/approval"


async def park(api: Api, who: str = "alice") -> str:
    found = await api.submit(who, "create 5")
    assert found["state"] == "awaiting_approval", found["reason"]
    assert found["receipt_seq"] is None  # no receipt until it ends
    return str(found["id"])


async def predicate(api: Api, who: str, submission_id: str) -> dict[str, Any]:
    answer = await api.get(who, f"/v1/receipts/{submission_id}")
    assert answer.status_code == 200, answer.text
    statement = json.loads(base64.b64decode(answer.json()["payload"]))
    found: dict[str, Any] = statement["predicate"]
    return found


async def test_an_approved_submission_runs_and_commits(parking: Api) -> None:
    sid = await park(parking)
    assert (await parking.get("carol", f"/v1/submissions/{sid}/diff")).status_code == 200
    answer = await parking.post("carol", ANSWER.format(sid),
                                json={"approve": True, "reason": "expected files"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "running"  # the real run is queued
    final = await parking.settle("alice", sid)
    assert final["state"] == "committed", final["reason"]
    assert final["version_after"] == 1
    approval = (await predicate(parking, "alice", sid))["approval"]
    assert approval["approver"] == "carol" and approval["approve"] is True
    assert approval["reason"] == "expected files"
    assert (await parking.get("carol", "/v1/approvals")).json() == []
    again = await parking.post("carol", ANSWER.format(sid), json={"approve": True,
                                                                  "reason": "twice"})
    assert again.status_code == 422


async def test_a_rejected_submission_is_denied_and_never_runs_for_real(parking: Api) -> None:
    sid = await park(parking)
    answer = await parking.post("root", ANSWER.format(sid),
                                json={"approve": False, "reason": "not today"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "denied"
    assert "rejected by root" in answer.json()["reason"]
    assert [spec.phase.value for spec in parking.runtime.runs] == ["dry_run"]
    approval = (await predicate(parking, "alice", sid))["approval"]
    assert approval["approver"] == "root" and approval["approve"] is False
    workspace = (await parking.get("alice", "/v1/workspaces/default")).json()
    assert workspace["version"] == 0 and workspace["versions"] == [0]


async def test_an_agent_cannot_approve_its_own_submission(parking: Api) -> None:
    mine = await park(parking, "alice")
    by_agent = await parking.post("alice", ANSWER.format(mine),
                                  json={"approve": True, "reason": "trust me"})
    assert by_agent.status_code == 403 and by_agent.json()["error"]["code"] == "forbidden"
    # An admin may submit, and answer others' requests, but never its own.
    own = await park(parking, "root")
    by_itself = await parking.post("root", ANSWER.format(own),
                                   json={"approve": True, "reason": "mine"})
    assert by_itself.status_code == 403, by_itself.text
    assert "own" in by_itself.json()["error"]["message"]
    for sid in (mine, own):
        found = await parking.get("audrey", f"/v1/submissions/{sid}")
        assert found.json()["state"] == "awaiting_approval"
    assert len(parking.runtime.runs) == 2  # the two dry runs, nothing more


async def test_an_approver_reads_what_is_before_it_and_no_more(parking: Api) -> None:
    sid = await park(parking)
    # The whole record while it waits for an answer...
    record = await parking.get("carol", f"/v1/submissions/{sid}")
    assert record.status_code == 200 and record.json()["state"] == "awaiting_approval"
    await parking.post("carol", ANSWER.format(sid), json={"approve": False, "reason": "no"})
    # ...and once answered, its events to the end and the receipt that records the answer.
    events = await parking.get("carol", f"/v1/submissions/{sid}/events")
    assert events.status_code == 200 and "awaiting_approval" in events.text
    assert "denied" in events.text
    assert (await predicate(parking, "carol", sid))["approval"]["approver"] == "carol"
    # A submission that never came before a human stays out of reach.
    plain = await parking.submit("bob", "print(1)")
    assert plain["state"] == "committed", plain["reason"]
    for path in (f"/v1/submissions/{plain['id']}", f"/v1/receipts/{plain['id']}",
                 f"/v1/submissions/{plain['id']}/events"):
        assert (await parking.get("carol", path)).status_code == 404, path


async def test_an_unknown_cursor_is_404_not_the_end_of_the_queue(parking: Api) -> None:
    await park(parking)
    answer = await parking.get("carol", "/v1/approvals", params={"cursor": "f" * 32})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


async def test_the_approver_sees_the_radius_and_the_record_binds_what_was_approved(
        parking: Api) -> None:
    sid = await park(parking)
    queue = (await parking.get("carol", "/v1/approvals")).json()
    radius = queue[0]["submission"]["radius"]
    assert radius["created"] == 5 and len(radius["sha256"]) == 64
    await parking.post("carol", ANSWER.format(sid), json={"approve": True, "reason": "ok"})
    final = await parking.settle("alice", sid)
    assert final["state"] == "committed", final["reason"]
    assert final["radius"]["sha256"] == radius["sha256"]
    assert final["divergence"]["diverged"] is False
    assert final["divergence"]["found"]["paths_sha256"]
    assert (await predicate(parking, "alice", sid))["approval"]["radius_sha256"] == (
        radius["sha256"])
