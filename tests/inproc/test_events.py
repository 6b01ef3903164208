"""``GET /v1/submissions/{id}/events``: server-sent events, one per transition, ending with
the terminal one; ``Last-Event-ID`` resumes; a principal's open streams are capped."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.inproc.conftest import (
    COMMITTED_PATH,
    DEADLINE_S,
    POLL_S,
    Api,
    parking_bundle,
    running_api,
    sse_events,
)

pytestmark = pytest.mark.anyio


def transitions(answer: httpx.Response) -> list[dict[str, Any]]:
    """The stream's events checked for framing: ids increasing, every event a transition
    whose data is a JSON object with from/to/at; each event's from is the previous to."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    events = sse_events(answer.text)
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids)) and all(i > 0 for i in ids), ids
    assert all(event["event"] == "transition" for event in events)
    data = [json.loads(event["data"]) for event in events]
    assert all(set(d) == {"from", "to", "at"} for d in data)
    for before, after in itertools.pairwise(data):
        assert after["from"] == before["to"]
    return [{"id": i, **d} for i, d in zip(ids, data, strict=True)]


async def test_a_finished_submission_streams_every_transition_then_ends(api: Api) -> None:
    sid = (await api.submit("alice", "print('events')"))["id"]
    with anyio.fail_after(DEADLINE_S):
        events = transitions(await api.get("alice", f"/v1/submissions/{sid}/events"))
    assert [e["to"] for e in events] == COMMITTED_PATH
    assert events[0]["from"] is None
    assert api.held_streams("alice") == 0  # its place was given back


async def test_last_event_id_resumes_after_that_event(api: Api) -> None:
    sid = (await api.submit("alice", "print('resume')"))["id"]
    path = f"/v1/submissions/{sid}/events"
    events = transitions(await api.get("alice", path))
    third = events[2]["id"]
    resumed = transitions(await api.get("alice", path,
                                        headers={"Last-Event-ID": str(third)}))
    assert [e["to"] for e in resumed] == COMMITTED_PATH[3:]
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    at_end = await api.get("alice", path, headers={"Last-Event-ID": str(events[-1]["id"])})
    assert at_end.status_code == 200 and at_end.text == ""  # nothing more: ends at once


async def test_a_live_stream_follows_an_approval_to_the_end_and_streams_are_capped(
        tmp_path: Path) -> None:
    async with running_api(tmp_path, policy_dir=parking_bundle(tmp_path),
                           streams_per_principal=1) as api:
        sid = (await api.submit("alice", "create 5"))["id"]
        path = f"/v1/submissions/{sid}/events"
        answers: list[httpx.Response] = []

        async def follow() -> None:
            answers.append(await api.get("alice", path))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                while api.held_streams("alice") < 1:
                    await anyio.sleep(POLL_S)
                second = await api.get("alice", path)
                assert second.status_code == 429, second.text
                assert second.json()["error"]["code"] == "rate_limited"
                approved = await api.post("carol", f"/v1/submissions/{sid}/approval",
                                          json={"approve": True, "reason": "expected"})
                assert approved.status_code == 200, approved.text
        events = transitions(answers[0])
        assert [e["to"] for e in events] == [
            "received", "dry_run", "assessing", "awaiting_approval", "running", "validating",
            "committing", "committed"]
        assert api.held_streams("alice") == 0
