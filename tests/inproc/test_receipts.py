"""Receipts served by the API verify with the independent verifier (``controller.verify``):
the whole log, each submission's code, and a checkpoint over the log."""

from __future__ import annotations

import json

import pytest

from controller.verify.chain import CodeCheck, verify_log
from controller.verify.checkpoint import CheckpointCheck
from controller.verify.dsse import load_public_keys
from tests.inproc.conftest import Api

pytestmark = pytest.mark.anyio


async def test_the_served_log_verifies_with_code_and_checkpoint(api: Api) -> None:
    ids = [(await api.submit("alice", f"print({n})"))["id"] for n in range(2)]
    ids.append((await api.submit("bob", "fail"))["id"])
    checkpoint = (await api.get("audrey", "/v1/checkpoint")).json()
    page = (await api.get("audrey", "/v1/receipts")).json()
    keys = (await api.get("bob", "/v1/keys")).json()
    public = load_public_keys("".join(key["pem"] for key in keys).encode())
    lines = [json.dumps(envelope) for envelope in page["receipts"]]
    codes = [CodeCheck(sid, (await api.get("audrey", f"/v1/submissions/{sid}/code")).content)
             for sid in ids]
    held = CheckpointCheck(checkpoint, public)
    report = verify_log(lines, public, checks=[*codes, held])
    assert report.ok, [str(p) for p in report.problems]
    assert report.checked == 3
    assert [check.matched for check in codes] == [[1], [2], [3]]
    assert held.checkpoint is not None and held.checkpoint.tree_size == 3


async def test_a_receipt_is_the_stored_envelope_and_tampering_fails(api: Api) -> None:
    sid = (await api.submit("alice", "print('signed')"))["id"]
    answer = await api.get("alice", f"/v1/receipts/{sid}")
    assert answer.headers["content-type"] == "application/json"
    assert answer.text == api.ctx.controller.store.receipt_for(sid)
    keys = (await api.get("alice", "/v1/keys")).json()
    public = load_public_keys("".join(key["pem"] for key in keys).encode())
    assert verify_log([answer.text], public).ok
    envelope = answer.json()
    envelope["payload"] = envelope["payload"][:-4] + "AAA="
    assert not verify_log([json.dumps(envelope)], public).ok


async def test_a_submission_without_a_receipt_yet_is_404(parking: Api) -> None:
    parked = await parking.submit("alice", "create 5")
    assert parked["state"] == "awaiting_approval"
    answer = await parking.get("alice", f"/v1/receipts/{parked['id']}")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
