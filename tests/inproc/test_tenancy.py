"""Tenancy: another tenant's records are 'not found', answered exactly as a missing id is."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio
SUBMISSION_PATHS = (
    "/v1/submissions/{}",
    "/v1/submissions/{}/diff",
    "/v1/submissions/{}/outputs/stdout",
    "/v1/submissions/{}/outputs/stderr",
    "/v1/submissions/{}/code",
    "/v1/submissions/{}/events",
    "/v1/receipts/{}",
)
WORKSPACE_PATHS = (
    "/v1/workspaces/{}",
    "/v1/workspaces/{}/files/out.txt",
    "/v1/workspaces/{}?owner=alice",
    "/v1/workspaces/{}/files/out.txt?owner=alice",
)


def shape(answer: httpx.Response, name: str) -> tuple[int, str, str]:
    """What a caller sees of a refusal, with the name it asked about blanked out."""
    return (answer.status_code, answer.headers["content-type"],
            answer.text.replace(name, "<name>"))


async def test_another_tenants_submission_is_404_like_a_missing_id(api: Api) -> None:
    sid = (await api.submit("alice", "print('mine')", workspace="alice-ws"))["id"]
    missing = uuid.uuid4().hex
    for template in SUBMISSION_PATHS:
        theirs = await api.get("bob", template.format(sid))
        nobody = await api.get("bob", template.format(missing))
        assert theirs.status_code == 404, (template, theirs.text)
        assert theirs.json()["error"]["code"] == "not_found"
        assert shape(theirs, sid) == shape(nobody, missing), template
        assert (await api.get("alice", template.format(sid))).status_code == 200, template
    cursor = await api.get("bob", "/v1/submissions", params={"cursor": sid})
    nowhere = await api.get("bob", "/v1/submissions", params={"cursor": missing})
    assert shape(cursor, sid) == shape(nowhere, missing) and cursor.status_code == 404


async def test_another_tenants_workspace_is_404_like_a_missing_one(api: Api) -> None:
    await api.submit("alice", "print('mine')", workspace="alice-ws")
    await api.submit("bob", "print('mine too')", workspace="bob-ws")
    for template in WORKSPACE_PATHS:
        theirs = await api.get("bob", template.format("alice-ws"))
        nobody = await api.get("bob", template.format("nope-ws"))
        assert theirs.status_code == 404, (template, theirs.text)
        assert shape(theirs, "alice-ws") == shape(nobody, "nope-ws"), template
    own = await api.get("alice", "/v1/workspaces/alice-ws/files/out.txt")
    assert own.status_code == 200 and own.content == b"print('mine')"
    assert own.headers["content-type"] == "application/octet-stream"


async def test_listings_show_a_tenant_only_its_own(api: Api) -> None:
    alice = [(await api.submit("alice", f"print({n})"))["id"] for n in range(2)]
    bob = (await api.submit("bob", "print('b')"))["id"]
    listed = (await api.get("bob", "/v1/submissions")).json()
    assert [s["id"] for s in listed["submissions"]] == [bob]
    receipts = (await api.get("bob", "/v1/receipts")).json()["receipts"]
    assert len(receipts) == 1
    mine = (await api.get("alice", "/v1/submissions")).json()["submissions"]
    assert {s["id"] for s in mine} == set(alice)
    assert all(s["agent"] == "alice" for s in mine)


async def test_an_approver_reads_only_what_was_put_before_it(api: Api) -> None:
    sid = (await api.submit("alice", "print('never parked')"))["id"]
    for template in SUBMISSION_PATHS:
        answer = await api.get("carol", template.format(sid))
        assert answer.status_code == 404, (template, answer.text)


async def test_an_idempotency_key_is_the_principals_own(api: Api) -> None:
    key = {"Idempotency-Key": "shared-key"}
    mine = await api.submit("alice", "print('same')", headers=key)
    theirs = await api.submit("bob", "print('same')", headers=key)
    assert theirs["id"] != mine["id"] and theirs["agent"] == "bob"
    assert theirs["state"] == "committed"
