"""Every status the API maps an error to, each with its stable ``code``: 400, 404, 405, 408,
413, 422, 429 (per principal: requests, waiting submissions) and 503 (a full queue, draining, no
signing key). 401, 403 and 409 have their own modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from controller.adapters.signing import ACTIVE
from tests.inproc.conftest import DEADLINE_S, POLL_S, Api, Script, running_api

pytestmark = pytest.mark.anyio
MISSING_ID = "f" * 32
SUBMIT = "/v1/submissions"
PY = {"language": "python", "code": "print(1)"}

# (method, path, request options): each must be refused 422 ``invalid_input``.
INVALID: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", SUBMIT, {"json": {"language": "cobol", "code": "x"}}),
    ("POST", SUBMIT, {"json": {"language": "python"}}),
    ("POST", SUBMIT, {"json": {**PY, "agent": "bob"}}),
    ("POST", SUBMIT, {"json": {**PY, "workspace": "../up"}}),
    ("POST", SUBMIT, {"json": {**PY, "profile": "no-such-profile"}}),
    ("POST", SUBMIT, {"json": {**PY, "files": [{"path": "a", "content": "x", "mode": 4096}]}}),
    ("POST", SUBMIT, {"json": PY, "params": {"wait": 61}}),
    ("POST", SUBMIT, {"json": PY, "params": {"wait": -1}}),
    ("POST", SUBMIT, {"json": PY, "headers": {"Idempotency-Key": "k" * 201}}),
    ("GET", SUBMIT, {"params": {"limit": 0}}),
    ("GET", SUBMIT, {"params": {"limit": 201}}),
    ("GET", SUBMIT, {"params": {"limit": "ten"}}),
    ("GET", "/v1/receipts", {"params": {"since_seq": -1}}),
    ("GET", SUBMIT, {"params": {"state": "comitted"}}),
    ("GET", SUBMIT, {"params": {"since": "2025-01-01"}}),
    ("GET", SUBMIT, {"params": {"since": "9999-12-31T23:59:59-23:59"}}),
    ("GET", SUBMIT, {"params": {"since": "0001-01-01T00:00:00+23:59"}}),
    ("GET", "/v1/approvals", {"params": {"limit": 101}}),
    ("GET", f"/v1/submissions/{MISSING_ID}/events", {"headers": {"Last-Event-ID": "abc"}}),
    ("POST", f"/v1/submissions/{MISSING_ID}/approval", {"json": {"approve": True}}),
    ("POST", f"/v1/submissions/{MISSING_ID}/approval",
     {"json": {"approve": True, "reason": ""}}),
]


@pytest.mark.parametrize(("method", "path", "options"), INVALID,
                         ids=[f"{m} {p[:24]} {o}"[:80] for m, p, o in INVALID])
async def test_bad_bodies_and_queries_are_422_and_change_nothing(
        api: Api, method: str, path: str, options: dict[str, Any]) -> None:
    answer = await api.request("root", method, path, **options)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and error["message"]
    assert set(answer.json()) == {"error"}
    assert api.ctx.controller.store.summaries(agent=None) == []
    assert api.runtime.runs == []


async def test_answering_a_submission_that_is_not_parked_is_422(api: Api) -> None:
    sid = (await api.submit("alice", "print(1)"))["id"]
    answer = await api.post("carol", f"/v1/submissions/{sid}/approval",
                            json={"approve": True, "reason": "late"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_input"
    assert (await api.get("alice", f"/v1/submissions/{sid}")).json()["state"] == "committed"


async def test_malformed_json_is_400(api: Api) -> None:
    answer = await api.post("alice", SUBMIT, content=b'{"language": "python", "code": ',
                            headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "malformed_json"


async def test_unknown_routes_are_404_and_wrong_methods_405(api: Api) -> None:
    unknown = await api.get("alice", "/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong = await api.request("alice", "DELETE", SUBMIT)
    assert wrong.status_code == 405, wrong.text
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_a_body_over_the_cap_is_413_whether_announced_or_streamed(api: Api) -> None:
    cap = api.ctx.settings.max_body_bytes
    code = "#" * cap
    announced = await api.post("alice", SUBMIT, json={"language": "python", "code": code})

    async def chunks() -> Any:
        for _ in range(4):
            yield b"x" * (cap // 2)

    streamed = await api.post("alice", SUBMIT, content=chunks(),
                              headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    for answer in (announced, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"
        assert answer.headers["connection"] == "close"
    assert api.ctx.controller.store.summaries(agent=None) == []


async def test_a_stalled_body_is_408(tmp_path: Path) -> None:
    async with running_api(tmp_path, body_timeout_s=0.2) as api:

        async def stalls() -> Any:
            yield b'{"language": "python", '
            await anyio.sleep(DEADLINE_S)  # cut off long before this ends
            yield b'"code": "print(1)"}'

        with anyio.fail_after(DEADLINE_S / 2):
            answer = await api.post("alice", SUBMIT, content=stalls(),
                                    headers={"Content-Type": "application/json"})
        assert answer.status_code == 408, answer.text
        assert answer.json()["error"]["code"] == "request_timeout"
        assert api.ctx.controller.store.summaries(agent=None) == []


async def test_past_its_request_rate_a_principal_gets_429_and_others_do_not(
        tmp_path: Path) -> None:
    async with running_api(tmp_path, rate_per_s=0.01, rate_burst=3) as api:
        answers = [await api.get("alice", SUBMIT) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["error"]["code"] == "rate_limited"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert (await api.get("bob", SUBMIT)).status_code == 200


async def started(script: Script) -> None:
    """Until a blocking run has begun (a worker holds it)."""
    with anyio.fail_after(DEADLINE_S):
        while not script.started.is_set():
            await anyio.sleep(POLL_S)


async def queue(api: Api, who: str, code: str) -> httpx.Response:
    return await api.post(who, SUBMIT, json={"language": "python", "code": code})


async def test_past_its_waiting_quota_a_principal_gets_429(tmp_path: Path) -> None:
    async with running_api(tmp_path, workers=1, queue_size=4, max_running_per_principal=1,
                           max_queued_per_principal=1) as api:
        running = await queue(api, "alice", "block")
        await started(api.script)
        waiting = await queue(api, "alice", "print('waits')")
        refused = await queue(api, "alice", "print('one too many')")
        others = await queue(api, "bob", "print('bob')")
        assert [running.status_code, waiting.status_code, others.status_code] == [202] * 3
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "max_queued" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        api.script.gate.set()
        for who, answer in (("alice", running), ("alice", waiting), ("bob", others)):
            assert (await api.settle(who, answer.json()["id"]))["state"] == "committed"
        assert len(api.ctx.controller.store.summaries(agent=None)) == 3


async def test_a_full_run_queue_is_503_overloaded(tmp_path: Path) -> None:
    async with running_api(tmp_path, workers=1, queue_size=0) as api:
        running = await queue(api, "alice", "block")
        await started(api.script)
        refused = await queue(api, "bob", "print('no room')")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["Retry-After"]) >= 1
        api.script.gate.set()
        assert (await api.settle("alice", running.json()["id"]))["state"] == "committed"
        # The place is given back just after the record ends: retried as Retry-After says.
        with anyio.fail_after(DEADLINE_S):
            while (later := await queue(api, "bob", "print('room now')")).status_code == 503:
                await anyio.sleep(POLL_S)
        assert later.status_code == 202, later.text


async def test_a_draining_controller_refuses_work_with_503_and_is_not_ready(api: Api) -> None:
    done = await api.submit("alice", "print('before')")
    await anyio.to_thread.run_sync(api.ctx.dispatcher.drain, DEADLINE_S)
    refused = await queue(api, "alice", "print('after')")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    assert int(refused.headers["Retry-After"]) >= 1
    ready = await api.get(None, "/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert ready.json()["checks"]["accepting"] == "draining"
    # Reads go on while draining.
    assert (await api.get("alice", f"/v1/submissions/{done['id']}")).status_code == 200


async def test_without_a_signing_key_new_work_is_503(api: Api) -> None:
    active = api.ctx.keyring.directory / ACTIVE
    aside = active.with_name("active.aside")
    active.rename(aside)
    try:
        refused = await queue(api, "alice", "print('unsigned')")
        ready = await api.get(None, "/readyz")
    finally:
        aside.rename(active)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "unavailable"
    assert str(api.ctx.keyring.directory) not in refused.text  # the path is for the log
    assert int(refused.headers["Retry-After"]) == 30
    assert ready.status_code == 503 and ready.json()["checks"]["signing_key"] != "ok"
    assert api.ctx.controller.store.summaries(agent=None) == []
    assert (await api.submit("alice", "print('signed')"))["state"] == "committed"


async def test_a_not_found_answer_quotes_at_most_64_characters_of_the_id(api: Api) -> None:
    answer = await api.get("alice", "/v1/submissions/" + "x" * 5000)
    assert answer.status_code == 404
    assert "x" * 64 + "…" in answer.json()["error"]["message"]
    assert "x" * 65 not in answer.text
