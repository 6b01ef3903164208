"""What the console reads besides the records: who a key is (``GET /v1/me``, the same answer
the feed's ready event gives), submissions filtered by workspace on the server (a tenant's
own workspace, never another's of the same name), the run queue (``GET /v1/status``) and
what ``sandgate profiles lint`` finds in the profiles (``GET /v1/profiles/lint``), the last
two for admins and auditors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ROOT
from tests.inproc.conftest import (
    DEADLINE_S,
    POLL_S,
    Api,
    running_api,
    sse_events,
)

pytestmark = pytest.mark.anyio
# Each principal of the harness as /v1/me must name it, written out here.
WHO = {
    "alice": {"principal": "alice", "role": "agent", "sees": "own"},
    "bob": {"principal": "bob", "role": "agent", "sees": "own"},
    "carol": {"principal": "carol", "role": "approver", "sees": "parked"},
    "root": {"principal": "root", "role": "admin", "sees": "all"},
    "audrey": {"principal": "audrey", "role": "auditor", "sees": "all"},
}
OVERSEERS = ("root", "audrey")
OTHERS = ("alice", "carol")
QUEUE_FIELDS = {"waiting", "running", "workers", "capacity", "principals"}


def ids(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["submissions"]]


# GET /v1/me ---------------------------------------------------------------------------------

async def test_me_names_each_caller_as_the_feeds_ready_event_does(tmp_path: Path) -> None:
    async with running_api(tmp_path, stream_idle_s=0.2) as api:
        for who, expected in WHO.items():
            answer = await api.get(who, "/v1/me")
            assert answer.status_code == 200, answer.text
            assert answer.json() == expected
            with anyio.fail_after(DEADLINE_S):
                feed = await api.get(who, "/v1/events")
            ready = sse_events(feed.text)[0]
            assert ready["event"] == "ready" and json.loads(ready["data"]) == expected


async def test_me_refuses_no_key_and_a_revoked_one(api: Api) -> None:
    for who in (None, "revoked"):
        answer = await api.get(who, "/v1/me")
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthenticated"


# GET /v1/submissions?workspace= -------------------------------------------------------------

async def test_an_agent_filtering_by_workspace_sees_only_its_own_in_it(api: Api) -> None:
    alices = [(await api.submit("alice", f"print({n})", workspace="shared"))["id"]
              for n in range(2)]
    elsewhere = (await api.submit("alice", "print('other')", workspace="other"))["id"]
    bobs = (await api.submit("bob", "print('bob')", workspace="shared"))["id"]
    shared = {"workspace": "shared"}
    assert ids(await api.get("alice", "/v1/submissions", params=shared)) == alices[::-1]
    assert ids(await api.get("bob", "/v1/submissions", params=shared)) == [bobs]
    assert ids(await api.get("alice", "/v1/submissions",
                             params={"workspace": "other"})) == [elsewhere]
    assert ids(await api.get("bob", "/v1/submissions", params={"workspace": "other"})) == []
    assert ids(await api.get("carol", "/v1/submissions", params=shared)) == []
    for who in OVERSEERS:  # every principal's workspace of that name
        assert ids(await api.get(who, "/v1/submissions", params=shared)) == [
            bobs, *alices[::-1]]
    first = await api.get("alice", "/v1/submissions", params={**shared, "limit": 1})
    assert ids(first) == [alices[1]]
    after = await api.get("alice", "/v1/submissions", params={
        **shared, "limit": 1, "cursor": first.json()["next_cursor"]})
    assert ids(after) == [alices[0]]  # the cursor pages within the filter
    none = await api.get("alice", "/v1/submissions", params={**shared, "state": "denied"})
    assert ids(none) == []


@pytest.mark.parametrize("name", ["", "../shared", "-leading", "a" * 65, "sp ace", "ü"])
async def test_a_workspace_filter_that_names_no_workspace_is_refused(api: Api,
                                                                     name: str) -> None:
    answer = await api.get("alice", "/v1/submissions", params={"workspace": name})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and error["message"].startswith("query.workspace")


# GET /v1/status -----------------------------------------------------------------------------

async def status(api: Api, who: str) -> dict[str, Any]:
    answer = await api.get(who, "/v1/status")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    assert set(found) == {"queue", "draining"} and set(found["queue"]) == QUEUE_FIELDS
    return found


async def queue_reaches(api: Api, expected: dict[str, int]) -> None:
    with anyio.fail_after(DEADLINE_S):
        while {k: (await status(api, "audrey"))["queue"][k] for k in expected} != expected:
            await anyio.sleep(POLL_S)


async def test_the_queue_shows_what_waits_and_runs_to_admins_and_auditors(api: Api) -> None:
    # The harness runs 2 workers and a queue of 8; an agent runs one at a time.
    idle = {"waiting": 0, "running": 0, "workers": 2, "capacity": 10, "principals": 0}
    for who in OVERSEERS:
        assert await status(api, who) == {"queue": idle, "draining": False}
    first = (await api.submit("alice", "block one", wait=0))["id"]
    assert await anyio.to_thread.run_sync(api.script.started.wait, DEADLINE_S)
    second = (await api.submit("alice", "block two", wait=0))["id"]
    await queue_reaches(api, {"waiting": 1, "running": 1, "principals": 1})
    third = (await api.submit("bob", "block three", wait=0))["id"]
    await queue_reaches(api, {"waiting": 1, "running": 2, "principals": 2})
    api.script.gate.set()
    for who, sid in (("alice", first), ("alice", second), ("bob", third)):
        assert (await api.settle(who, sid))["state"] == "committed"
    await queue_reaches(api, {"waiting": 0, "running": 0, "principals": 0})


async def test_the_status_is_refused_to_agents_and_approvers(api: Api) -> None:
    for who in OTHERS:
        answer = await api.get(who, "/v1/status")
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    assert (await api.get(None, "/v1/status")).status_code == 401


# GET /v1/profiles/lint ----------------------------------------------------------------------

def profiles_copy(tmp_path: Path) -> Path:
    """The shipped profiles, with standard's pids raised past what the lint accepts."""
    copied = Path(shutil.copytree(ROOT / "profiles", tmp_path / "profiles"))
    standard = copied / "standard.yaml"
    text = standard.read_text()
    assert "  pids: 64\n" in text
    standard.write_text(text.replace("  pids: 64\n", "  pids: 2048\n"))
    return copied


async def lint(api: Api, who: str = "audrey") -> dict[str, dict[str, Any]]:
    answer = await api.get(who, "/v1/profiles/lint")
    assert answer.status_code == 200, answer.text
    return {entry["file"]: entry for entry in answer.json()}


async def test_the_lint_says_what_each_profile_file_allows_and_whether_it_is_in_use(
        tmp_path: Path) -> None:
    directory = profiles_copy(tmp_path)
    async with running_api(tmp_path, profiles_dir=directory) as api:
        loaded = {p["name"]: p["digest"]
                  for p in (await api.get("root", "/v1/profiles")).json()}
        found = await lint(api)
        assert set(found) == {"standard.yaml", "strict.yaml"}
        strict, standard = found["strict.yaml"], found["standard.yaml"]
        assert (strict["profile"], strict["loaded"], strict["findings"]) == ("strict", True, [])
        assert strict["digest"] == loaded["strict"]
        # Changed on disk since the controller loaded the shipped one: not the one in use.
        assert standard["profile"] == "standard" and standard["loaded"] is False
        assert standard["digest"] != loaded["standard"]
        [finding] = standard["findings"]
        assert finding["level"] == "warning" and "pids 2048" in finding["message"]
        assert finding["where"].endswith("standard.yaml")

        reloaded = await api.post("root", "/v1/profiles/reload")
        assert reloaded.status_code == 200, reloaded.text
        after = (await lint(api, "root"))["standard.yaml"]
        assert after["loaded"] is True and after["findings"] == standard["findings"]

        (directory / "broken.yaml").write_text("name: [unclosed\n")
        broken = (await lint(api))["broken.yaml"]
        assert (broken["profile"], broken["digest"], broken["loaded"]) == (None, None, False)
        assert [f["level"] for f in broken["findings"]] == ["error"]
        assert "broken.yaml" in broken["findings"][0]["message"]


async def test_the_lint_is_refused_to_agents_and_approvers(api: Api) -> None:
    for who in OTHERS:
        answer = await api.get(who, "/v1/profiles/lint")
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    assert (await api.get(None, "/v1/profiles/lint")).status_code == 401
