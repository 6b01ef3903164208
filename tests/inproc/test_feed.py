"""``GET /v1/events``: the feed of every transition the caller may read. It opens with a
``ready`` event naming the caller and where it starts; agents see their own submissions
only, approvers submissions from their parking on, admins and auditors everything; it
resumes after ``Last-Event-ID``, ends when idle and counts against the stream cap."""

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
IDLE_S = 0.5  # the feeds here end this long after their last event
# A parked one's path, written out here (not read from the lifecycle).
APPROVED_TAIL = ["awaiting_approval", "running", "validating", "committing", "committed"]


def feed(answer: httpx.Response) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the ready event, the transitions) of a whole feed body, checked for framing: the
    ready event first, then transitions with increasing ids above the ready one."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer.text)
    assert events and events[0]["event"] == "ready", answer.text[:300]
    ready = {"id": int(events[0]["id"]), **json.loads(events[0]["data"])}
    rest = events[1:]
    assert all(event["event"] == "transition" for event in rest)
    ids = [int(event["id"]) for event in rest]
    assert ids == sorted(set(ids)) and all(i > ready["id"] for i in ids), (ready, ids)
    found = [{"id": i, **json.loads(e["data"])} for i, e in zip(ids, rest, strict=True)]
    assert all(set(e) == {"id", "submission_id", "agent", "workspace", "from", "to", "at"}
               for e in found)
    return ready, found


def path_of(events: list[dict[str, Any]], sid: str) -> list[str]:
    return [e["to"] for e in events if e["submission_id"] == sid]


@pytest.fixture
async def quick(tmp_path: Path, anyio_backend: str) -> Any:
    """The app with feeds that end after ``IDLE_S`` without an event."""
    async with running_api(tmp_path, stream_idle_s=IDLE_S) as api:
        yield api


async def read_feed(api: Api, who: str, after: int | None = 0) -> httpx.Response:
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    with anyio.fail_after(DEADLINE_S):
        return await api.get(who, "/v1/events", headers=headers)


async def test_the_feed_names_the_caller_and_replays_after_last_event_id(quick: Api) -> None:
    sid = (await quick.submit("alice", "print('feed')", workspace="feed-ws"))["id"]
    ready, events = feed(await read_feed(quick, "audrey"))
    assert ready == {"id": 0, "principal": "audrey", "role": "auditor", "sees": "all"}
    assert path_of(events, sid) == COMMITTED_PATH
    mine = [e for e in events if e["submission_id"] == sid]
    assert {(e["agent"], e["workspace"]) for e in mine} == {("alice", "feed-ws")}
    assert mine[0]["from"] is None and all(
        after["from"] == before["to"] for before, after in itertools.pairwise(mine))
    third = mine[2]["id"]
    again, resumed = feed(await read_feed(quick, "audrey", third))
    assert again["id"] == third
    assert path_of(resumed, sid) == COMMITTED_PATH[3:]


async def test_without_last_event_id_the_feed_starts_at_the_newest_event(quick: Api) -> None:
    sid = (await quick.submit("alice", "print('before')"))["id"]
    newest = path_of(feed(await read_feed(quick, "alice"))[1], sid)
    assert newest == COMMITTED_PATH
    ready, events = feed(await read_feed(quick, "alice", after=None))
    assert ready["principal"] == "alice" and ready["sees"] == "own"
    assert events == []  # nothing new since it opened; it ended when idle
    assert ready["id"] > 0
    future, nothing = feed(await read_feed(quick, "alice", after=10**12))
    assert future["id"] == ready["id"] and nothing == []  # an id not yet written: the newest


async def test_an_agent_sees_its_own_submissions_and_never_another_tenants(
        quick: Api) -> None:
    alices = (await quick.submit("alice", "print('alice')", workspace="shared"))["id"]
    bobs = (await quick.submit("bob", "print('bob')", workspace="shared"))["id"]
    for who, own, other in (("alice", alices, bobs), ("bob", bobs, alices)):
        answer = await read_feed(quick, who)
        ready, events = feed(answer)
        assert ready["sees"] == "own"
        assert path_of(events, own) == COMMITTED_PATH
        assert {e["agent"] for e in events} == {who}
        assert other not in answer.text  # not an event, not a field, not a byte
    for who in ("audrey", "root"):
        ready, events = feed(await read_feed(quick, who))
        assert ready["sees"] == "all"
        assert path_of(events, alices) == path_of(events, bobs) == COMMITTED_PATH


async def test_an_approver_sees_submissions_from_their_parking_on(tmp_path: Path) -> None:
    async with running_api(tmp_path, policy_dir=parking_bundle(tmp_path),
                           stream_idle_s=IDLE_S) as api:
        parked = (await api.submit("alice", "create 5"))["id"]
        plain = (await api.submit("alice", "print('never parked')", workspace="other"))["id"]
        answer = await read_feed(api, "carol")
        ready, events = feed(answer)
        assert ready == {"id": 0, "principal": "carol", "role": "approver", "sees": "parked"}
        assert path_of(events, parked) == ["awaiting_approval"]
        assert events[0]["from"] == "assessing"
        assert plain not in answer.text
        approved = await api.post("carol", f"/v1/submissions/{parked}/approval",
                                  json={"approve": True, "reason": "expected files"})
        assert approved.status_code == 200, approved.text
        await api.settle("alice", parked)
        assert path_of(feed(await read_feed(api, "carol"))[1], parked) == APPROVED_TAIL
        assert path_of(feed(await read_feed(api, "bob"))[1], parked) == []


async def test_a_transition_reaches_an_open_feed_as_it_happens(quick: Api) -> None:
    sid = (await quick.submit("alice", "block live", wait=0))["id"]
    assert await anyio.to_thread.run_sync(quick.script.started.wait, DEADLINE_S)
    answers: list[httpx.Response] = []

    async def follow() -> None:
        answers.append(await quick.get("alice", "/v1/events"))

    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            while quick.held_streams("alice") < 1:
                await anyio.sleep(POLL_S)
            await anyio.sleep(0.2)  # the feed has read where it starts
            quick.script.gate.set()  # the dry run ends; the rest happens while it is open
    _ready, events = feed(answers[0])
    assert path_of(events, sid) == COMMITTED_PATH[2:]  # everything after it opened
    assert quick.held_streams("alice") == 0  # its place was given back when it ended


async def test_feeds_count_against_the_stream_cap_and_refuse_a_bad_last_event_id(
        tmp_path: Path) -> None:
    async with running_api(tmp_path, streams_per_principal=1, stream_idle_s=1.0) as api:
        answers: list[httpx.Response] = []

        async def follow() -> None:
            answers.append(await api.get("alice", "/v1/events"))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                while api.held_streams("alice") < 1:
                    await anyio.sleep(POLL_S)
                second = await api.get("alice", "/v1/events")
                assert second.status_code == 429, second.text
                assert second.json()["error"]["code"] == "rate_limited"
                other = await api.get("bob", "/v1/events", headers={"Last-Event-ID": "0"})
                assert other.status_code == 200  # the cap is per principal
        assert answers[0].status_code == 200 and api.held_streams("alice") == 0
        bad = await api.get("alice", "/v1/events", headers={"Last-Event-ID": "-1"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
        anonymous = await api.get(None, "/v1/events")
        assert anonymous.status_code == 401


async def test_a_revoked_key_ends_its_open_feed_on_a_busy_service(tmp_path: Path) -> None:
    # Idle feeds would live 30 s; the revocation must end this one long before.
    async with running_api(tmp_path, stream_idle_s=30.0, auth_cache_s=0.0) as api:
        answers: list[httpx.Response] = []

        async def follow() -> None:
            answers.append(await api.get("audrey", "/v1/events"))

        with anyio.fail_after(DEADLINE_S):
            async with anyio.create_task_group() as group:
                group.start_soon(follow)
                while api.held_streams("audrey") < 1:
                    await anyio.sleep(POLL_S)
                api.ctx.principals.revoke("audrey")
                n = 0
                while not answers:  # the service stays busy: every event resets idleness
                    await api.submit("bob", f"print({n})", wait=0)
                    n += 1
                    await anyio.sleep(0.2)
        assert answers[0].status_code == 200 and api.held_streams("audrey") == 0
        assert (await api.get("audrey", "/v1/events")).status_code == 401


async def test_an_agents_feed_is_not_woken_by_another_tenants_submissions(quick: Api) -> None:
    sid = (await quick.submit("bob", "print('bob')"))["id"]
    ready, _ = feed(await read_feed(quick, "alice", None))  # opens the hub, then idles out
    hub = quick.app.state.feed_announcements
    with hub.watching("alice") as alices, hub.watching(None) as anyones:
        bobs = quick.ctx.controller.store.get(sid)
        assert bobs is not None
        hub.listener(bobs)
        await anyio.sleep(0.1)
        assert anyones.is_set() and not alices.is_set()
    assert ready["sees"] == "own"
