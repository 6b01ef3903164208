"""Who may call what: credentials (401), roles (403), and the failing-key budget (429)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inproc.conftest import Api, running_api

pytestmark = pytest.mark.anyio
UNKNOWN_KEY = "sg_" + "A" * 43  # shaped like a key, held by nobody
MISSING_ID = "0" * 32


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer not-a-sandgate-key",
    f"Bearer {UNKNOWN_KEY}",
    "Bearer {revoked}",
    "Basic {alice}",
    "{alice}",
])
async def test_no_bad_or_revoked_key_is_401_and_submits_nothing(
        api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {
        "Authorization": authorization.format(alice=api.keys["alice"],
                                              revoked=api.keys["revoked"])}
    listed = await api.get(None, "/v1/submissions", headers=headers)
    posted = await api.post(None, "/v1/submissions", headers=headers,
                            json={"language": "python", "code": "print(1)"})
    for answer in (listed, posted):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthenticated"
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert posted.headers["connection"] == "close"  # the body was never read
    assert api.ctx.controller.store.summaries(agent=None) == []
    assert api.runtime.runs == []


async def test_health_and_readiness_need_no_key(api: Api) -> None:
    health = await api.get(None, "/healthz")
    ready = await api.get(None, "/readyz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert set(ready.json()["checks"].values()) == {"ok"}


APPROVAL = {"approve": True, "reason": "looks fine"}
# (method, path, body, roles refused with 403, roles let through): written from the API's
# description of each route, not from the code's role sets.
GATED: list[tuple[str, str, dict[str, object] | None, set[str], set[str]]] = [
    ("POST", "/v1/submissions", {"language": "python", "code": "print(1)"},
     {"carol", "audrey"}, {"alice", "root"}),
    ("GET", "/v1/approvals", None, {"alice", "audrey"}, {"carol", "root"}),
    ("POST", f"/v1/submissions/{MISSING_ID}/approval", APPROVAL, {"alice", "audrey"}, set()),
    ("POST", "/v1/policies/reload", None, {"alice", "carol", "audrey"}, {"root"}),
    ("POST", "/v1/profiles/reload", None, {"alice", "carol", "audrey"}, {"root"}),
]


@pytest.mark.parametrize(("method", "path", "body", "refused", "allowed"), GATED,
                         ids=[f"{m} {p.replace(MISSING_ID, '{id}')}" for m, p, *_ in GATED])
async def test_each_role_gated_route_refuses_other_roles_with_403(
        api: Api, method: str, path: str, body: dict[str, object] | None, refused: set[str],
        allowed: set[str]) -> None:
    for who in sorted(refused):
        answer = await api.request(who, method, path, json=body)
        assert answer.status_code == 403, (who, answer.text)
        assert answer.json()["error"]["code"] == "forbidden"
    for who in sorted(allowed):
        answer = await api.request(who, method, path, json=body,
                                   params={"wait": 10} if method == "POST" else None)
        assert answer.status_code in (200, 202), (who, answer.text)
    submitted = api.ctx.controller.store.summaries(agent=None)
    assert sorted(s.agent for s in submitted) == sorted(
        allowed if path == "/v1/submissions" else set())


async def test_an_approver_answering_for_a_missing_submission_gets_404(api: Api) -> None:
    answer = await api.post("carol", f"/v1/submissions/{MISSING_ID}/approval", json=APPROVAL)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


async def test_an_auditor_reads_every_tenant_but_changes_nothing(api: Api) -> None:
    mine = await api.submit("alice", "print('alice')", workspace="alice-ws")
    theirs = await api.submit("bob", "print('bob')")
    sid = mine["id"]
    for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/diff",
                 f"/v1/submissions/{sid}/outputs/stdout", f"/v1/submissions/{sid}/code",
                 f"/v1/receipts/{sid}", "/v1/workspaces/alice-ws?owner=alice",
                 "/v1/workspaces/alice-ws/files/out.txt?owner=alice"):
        answer = await api.get("audrey", path)
        assert answer.status_code == 200, (path, answer.text)
    listed = (await api.get("audrey", "/v1/submissions")).json()["submissions"]
    assert {s["id"] for s in listed} == {sid, theirs["id"]}
    receipts = (await api.get("audrey", "/v1/receipts")).json()["receipts"]
    assert len(receipts) == 2
    code = await api.get("audrey", f"/v1/submissions/{sid}/code")
    assert code.text == "print('alice')"
    refused = await api.post("audrey", "/v1/submissions",
                             json={"language": "python", "code": "print(2)"})
    assert refused.status_code == 403


async def test_failing_keys_past_the_budget_are_429_but_a_valid_key_passes(
        tmp_path: Path) -> None:
    async with running_api(tmp_path, auth_failures_per_min=2) as api:
        bad = {"Authorization": f"Bearer {UNKNOWN_KEY}"}
        first = [await api.get(None, "/v1/submissions", headers=bad) for _ in range(2)]
        assert [a.status_code for a in first] == [401, 401]
        limited = await api.get(None, "/v1/submissions", headers=bad)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await api.get("alice", "/v1/submissions")).status_code == 200
