"""Pages: submissions (newest first, by cursor), a run's diff (path order), receipts (by
sequence) and the approvals queue (oldest first): every item once, and an end."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio


async def pages(api: Api, who: str, path: str, items: str, cursor_in: str, cursor_out: str,
                limit: int) -> list[list[Any]]:
    """Every page of a listing, following its cursor until it says there is no more."""
    found: list[list[Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        answer = await api.get(who, path, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found.append(body[items])
        assert len(found) <= 20, "the cursor never ends"
        if body[cursor_out] is None:
            return found
        params = {"limit": limit, cursor_in: body[cursor_out]}


async def test_submissions_page_newest_first_each_once(api: Api) -> None:
    submitted = [(await api.submit("alice", f"print({n})"))["id"] for n in range(5)]
    await api.submit("bob", "print('not alice')")
    got = await pages(api, "alice", "/v1/submissions", "submissions", "cursor",
                      "next_cursor", limit=2)
    assert [len(page) for page in got] == [2, 2, 1]
    assert [s["id"] for page in got for s in page] == list(reversed(submitted))
    exact = await pages(api, "alice", "/v1/submissions", "submissions", "cursor",
                        "next_cursor", limit=5)
    assert [len(page) for page in exact] == [5, 0]  # a full page cannot know it is the last


async def test_submissions_filter_by_state(api: Api) -> None:
    good = (await api.submit("alice", "print('ok')"))["id"]
    bad = (await api.submit("alice", "fail"))["id"]
    assert (await api.get("alice", f"/v1/submissions/{bad}")).json()["state"] == "rolled_back"
    for state, expected in (("committed", [good]), ("rolled_back", [bad]), ("denied", [])):
        listed = (await api.get("alice", "/v1/submissions", params={"state": state})).json()
        assert [s["id"] for s in listed["submissions"]] == expected, state


async def test_a_diff_pages_in_path_order(api: Api) -> None:
    sid = (await api.submit("alice", "create 5"))["id"]
    got = await pages(api, "alice", f"/v1/submissions/{sid}/diff", "changes", "cursor",
                      "next_cursor", limit=2)
    assert [len(page) for page in got] == [2, 2, 1]
    paths = [change["path"] for page in got for change in page]
    assert paths == ["n0", "n1", "n2", "n3", "n4"]
    whole = (await api.get("alice", f"/v1/submissions/{sid}/diff")).json()
    assert whole["phase"] == "bounded" and whole["summary"]["created"] == 5
    dry = (await api.get("alice", f"/v1/submissions/{sid}/diff",
                         params={"phase": "dry_run"})).json()
    assert dry["phase"] == "dry_run" and len(dry["changes"]) == 5


async def test_receipts_page_by_sequence_and_agents_see_their_own(api: Api) -> None:
    for n in range(3):
        await api.submit("alice", f"print({n})")
    await api.submit("bob", "print('b')")
    got = await pages(api, "audrey", "/v1/receipts", "receipts", "since_seq",
                      "next_since_seq", limit=3)
    assert [len(page) for page in got] == [3, 1]
    own = await pages(api, "alice", "/v1/receipts", "receipts", "since_seq",
                      "next_since_seq", limit=2)
    assert [len(page) for page in own] == [2, 1]


async def test_an_output_reads_from_an_offset(api: Api) -> None:
    sid = (await api.submit("alice", "print('0123456789')"))["id"]
    path = f"/v1/submissions/{sid}/outputs/stdout"
    whole = await api.get("alice", path)
    assert whole.content == b"ran: print('0123456789')"
    assert whole.headers["Sandgate-Output-Size"] == str(len(whole.content))
    part = await api.get("alice", path, params={"offset": 5, "limit": 5})
    assert part.content == b"print"
    assert (await api.get("alice", f"/v1/submissions/{sid}/outputs/stderr")).content == b""


async def test_the_approvals_queue_pages_oldest_first(parking: Api) -> None:
    parked = []
    for n in range(3):
        found = await parking.submit("alice", "create 5", workspace=f"ws-{n}")
        assert found["state"] == "awaiting_approval", found["reason"]
        parked.append(found["id"])
    first = (await parking.get("carol", "/v1/approvals", params={"limit": 2})).json()
    assert [r["submission"]["id"] for r in first] == parked[:2]
    rest = (await parking.get("carol", "/v1/approvals",
                              params={"limit": 2, "cursor": first[-1]["submission"]["id"]}))
    assert [r["submission"]["id"] for r in rest.json()] == parked[2:]
    request = first[0]
    assert request["code"] == "create 5" and request["code_truncated"] is False
    assert [c["path"] for c in request["dry_run_changes"]] == ["n0", "n1", "n2", "n3", "n4"]
    assert [r["id"] for r in request["waiting_because"]] == ["run_unattended.many-new-files"]
