"""``Idempotency-Key``: a retry returns the first submission; another body is a 409."""

from __future__ import annotations

import anyio
import pytest

from tests.inproc.conftest import DEADLINE_S, Api

pytestmark = pytest.mark.anyio
BODY = {"language": "python", "code": "print('once')", "labels": {"run": "1", "by": "ci"}}


async def test_the_same_key_and_body_return_the_same_submission(api: Api) -> None:
    key = {"Idempotency-Key": "retry-1"}
    first = await api.post("alice", "/v1/submissions", params={"wait": 10}, json=BODY,
                           headers=key)
    again = await api.post("alice", "/v1/submissions", params={"wait": 10}, json=BODY,
                           headers=key)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == f"/v1/submissions/{first.json()['id']}"
    assert again.json()["state"] == "committed"
    # Key order in the body (a label map's too) is not a different body.
    reordered = {"labels": {"by": "ci", "run": "1"}, "code": BODY["code"],
                 "language": "python"}
    third = await api.post("alice", "/v1/submissions", json=reordered, headers=key)
    assert third.status_code == 202 and third.json()["id"] == first.json()["id"]
    assert len(api.ctx.controller.store.summaries(agent=None)) == 1
    assert len(api.runtime.runs) == 2  # one dry run, one real run


async def test_the_same_key_with_another_body_is_409_and_records_nothing(api: Api) -> None:
    key = {"Idempotency-Key": "retry-2"}
    first = await api.submit("alice", "print('first')", headers=key)
    other = await api.post("alice", "/v1/submissions", headers=key,
                           json={"language": "python", "code": "print('second')"})
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert "retry-2" in other.json()["error"]["message"]
    listed = (await api.get("alice", "/v1/submissions")).json()["submissions"]
    assert [s["id"] for s in listed] == [first["id"]]


async def test_without_a_key_each_post_is_a_new_submission(api: Api) -> None:
    ids = {(await api.submit("alice", "print('again')"))["id"] for _ in range(2)}
    assert len(ids) == 2


async def test_concurrent_retries_with_one_key_make_one_submission(api: Api) -> None:
    ids: list[str] = []

    async def post() -> None:
        answer = await api.post("alice", "/v1/submissions", json=BODY,
                                headers={"Idempotency-Key": "storm"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])

    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(post)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert (await api.settle("alice", ids[0]))["state"] == "committed"
    assert len(api.ctx.controller.store.summaries(agent=None)) == 1
