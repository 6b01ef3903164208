"""The REST service as agents use it, over real HTTP, Docker, SQLite and signatures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TypedDict

import httpx
import pytest

from controller.client import ClientError, SandgateClient
from tests.api.conftest import BIN, Server, free_port
from tests.conftest import owned_containers

pytestmark = pytest.mark.docker


def test_an_agent_submits_waits_and_verifies_its_receipt(server: Server, tmp_path: Path) -> None:
    with SandgateClient(server.url, server.keys["alice"]) as client:
        result = client.submit("print('hello over http')", workspace="alice-ws", wait=30)
        assert result["state"] == "committed", result["reason"]
        assert result["stdout"] == "hello over http\n" and result["agent"] == "alice"
        again = client.get(result["id"])
        assert again["receipt_seq"] == result["receipt_seq"]
        assert [(d["gate"], d["outcome"]) for d in again["decisions"]] == [
            ("submit", "PERMIT"), ("run", "PERMIT"), ("run_unattended", "PERMIT"),
            ("commit", "PERMIT")]
        envelope = client.receipt(result["id"])
        keys = client.keys()
    assert json.loads(envelope)["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(__import__("base64").b64decode(json.loads(envelope)["payload"]))
    assert statement["predicate"]["agent"] == "alice"
    (tmp_path / "one.jsonl").write_text(envelope + "\n")
    (tmp_path / "keys.pem").write_text("".join(k["pem"] for k in keys))
    seq = str(result["receipt_seq"])
    done = subprocess.run([str(BIN / "sandgate-verify"), str(tmp_path / "one.jsonl"), "--key",
                           str(tmp_path / "keys.pem"), "--from-seq", seq],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_whole_log_verifies_for_an_auditor(server: Server, tmp_path: Path) -> None:
    with server.client("alice") as alice:
        alice.post("/v1/submissions?wait=30", json={"language": "sh", "code": "echo x",
                                                    "workspace": "alice-ws"})
    with server.client("audrey") as auditor:
        checkpoint = auditor.get("/v1/checkpoint").text  # nothing runs between the two reads
        receipts = auditor.get("/v1/receipts", params={"limit": 1000}).json()["receipts"]
        keys = auditor.get("/v1/keys").json()
    assert len(receipts) >= 1
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in receipts))
    (tmp_path / "keys.pem").write_text("".join(k["pem"] for k in keys))
    (tmp_path / "checkpoint.json").write_text(checkpoint)
    done = subprocess.run([str(BIN / "sandgate-verify"), str(tmp_path / "log.jsonl"), "--key",
                           str(tmp_path / "keys.pem"), "--checkpoint",
                           str(tmp_path / "checkpoint.json")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"checkpoint holds: tree size {len(receipts)}," in done.stdout


def test_tenants_cannot_see_each_other(server: Server) -> None:
    with server.client("alice") as alice, server.client("bob") as bob:
        mine = alice.post("/v1/submissions?wait=30",
                          json={"language": "python", "code": "print(1)",
                                "workspace": "alice-private"}).json()
        sid = mine["id"]
        for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/events",
                     f"/v1/receipts/{sid}", "/v1/workspaces/alice-private",
                     "/v1/workspaces/alice-private/files/x"):
            answer = bob.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] == "not_found"
        listed = bob.get("/v1/submissions").json()["submissions"]
        assert sid not in {s["id"] for s in listed}
        theirs = bob.get("/v1/receipts").json()["receipts"]
        assert all(_agent_of(r) == "bob" for r in theirs)
        # The same name is bob's own workspace: it neither collides with nor reveals hers.
        same_name = bob.post("/v1/submissions?wait=30", json={
            "language": "python", "code": "open('x', 'w').write('bob')",
            "workspace": "alice-private"}).json()
        assert same_name["state"] == "committed", same_name["reason"]
        assert bob.get("/v1/workspaces/alice-private/files/x").text == "bob"
        assert alice.get("/v1/workspaces/alice-private/files/x").status_code == 404
        assert alice.get("/v1/workspaces/alice-private").json()["version"] == 1
        assert alice.get(f"/v1/submissions/{sid}").status_code == 200


def _agent_of(envelope: dict[str, str]) -> str:
    import base64

    return str(json.loads(base64.b64decode(envelope["payload"]))["predicate"]["agent"])


class Body(TypedDict, total=False):
    """What a bad request sends: a JSON document, or raw bytes."""

    json: object
    content: bytes


BAD_INPUTS: list[tuple[str, Body, int, str]] = [
    ("malformed json", {"content": b'{"language": "python",'}, 400, "malformed_json"),
    ("wrong type", {"json": {"language": "python", "code": 42}}, 422, "invalid_input"),
    ("unknown language", {"json": {"language": "cobol", "code": "x"}}, 422, "invalid_input"),
    ("unknown profile", {"json": {"language": "python", "code": "x", "profile": "nope"}}, 422,
     "invalid_input"),
    ("2 MB code", {"json": {"language": "python", "code": "#" * (2 << 20)}}, 422,
     "invalid_input"),
    ("10,000 files", {"json": {"language": "python", "code": "x",
                               "files": [{"path": f"f{i}", "content": ""}
                                         for i in range(10_000)]}}, 422, "invalid_input"),
    ("../x", {"json": {"language": "python", "code": "x",
                       "files": [{"path": "../x", "content": ""}]}}, 422, "invalid_input"),
    ("absolute", {"json": {"language": "python", "code": "x",
                           "files": [{"path": "/etc/x", "content": ""}]}}, 422, "invalid_input"),
    ("NUL", {"json": {"language": "python", "code": "x",
                      "files": [{"path": "a\u0000b", "content": ""}]}}, 422, "invalid_input"),
    ("extra field", {"json": {"language": "python", "code": "x", "agent": "bob"}}, 422,
     "invalid_input"),
    ("too large", {"content": b"x" * (17 << 20)}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_4xx_that_changes_nothing(server: Server, name: str,
                                                 body: Body, status: int,
                                                 code: str) -> None:
    with server.client("root") as admin, server.client("alice") as alice:
        before = len(admin.get("/v1/submissions", params={"limit": 200}).json()["submissions"])
        headers = {"Content-Type": "application/json"}
        answer = alice.post("/v1/submissions", headers=headers, **body)
        assert answer.status_code == status, answer.text[:300]
        assert answer.json()["error"]["code"] == code
        assert answer.json()["error"]["message"]
        after = len(admin.get("/v1/submissions", params={"limit": 200}).json()["submissions"])
    assert after == before
    assert owned_containers(server.owner) == []


@pytest.mark.parametrize(("header", "code"), [(None, "unauthenticated"),
                                              ("Bearer sg_nope", "unauthenticated"),
                                              ("revoked", "unauthenticated")])
def test_missing_bad_or_revoked_keys_are_401(server: Server, header: str | None,
                                             code: str) -> None:
    headers = {}
    if header == "revoked":
        headers["Authorization"] = f"Bearer {server.keys['revoked']}"
    elif header is not None:
        headers["Authorization"] = header
    answer = httpx.post(f"{server.url}/v1/submissions", headers=headers,
                        json={"language": "python", "code": "print(1)"})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == code


def test_wrong_role_is_403(server: Server) -> None:
    with server.client("audrey") as auditor:
        answer = auditor.post("/v1/submissions", json={"language": "python", "code": "1"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


def test_idempotency_key_makes_retries_safe(server: Server) -> None:
    body = {"language": "python", "code": "print('once')", "workspace": "alice-idem"}
    with server.client("alice") as alice:
        first = alice.post("/v1/submissions?wait=30", json=body,
                           headers={"Idempotency-Key": "k-1"}).json()
        second = alice.post("/v1/submissions", json=body,
                            headers={"Idempotency-Key": "k-1"}).json()
        assert first["id"] == second["id"] and second["state"] == "committed"
        other = alice.post("/v1/submissions", json={**body, "code": "print('twice')"},
                           headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_conflict"
        workspace = alice.get("/v1/workspaces/alice-idem").json()
    assert workspace["version"] == 1


def test_events_stream_every_transition_and_resume(server: Server) -> None:
    with SandgateClient(server.url, server.keys["alice"]) as client:
        sid = client.submit("print(2)", workspace="alice-events")["id"]
        events = list(client.events(sid))
        assert [e["to"] for e in events] == ["received", "dry_run", "assessing", "running",
                                             "validating", "committing", "committed"]
        resumed = list(client.events(sid, last_event_id=events[3]["id"]))
        assert [e["to"] for e in resumed] == ["validating", "committing", "committed"]


def test_workspace_files_are_served_read_only(server: Server) -> None:
    with SandgateClient(server.url, server.keys["alice"]) as client:
        client.submit("open('data.txt', 'w').write('v1')", workspace="alice-files", wait=30)
        client.submit("open('data.txt', 'w').write('v2')", workspace="alice-files", wait=30)
    with server.client("alice") as alice:
        assert alice.get("/v1/workspaces/alice-files").json()["versions"] == [0, 1, 2]
        assert alice.get("/v1/workspaces/alice-files/files/data.txt").content == b"v2"
        old = alice.get("/v1/workspaces/alice-files/files/data.txt", params={"version": 1})
        assert old.content == b"v1"
        assert alice.put("/v1/workspaces/alice-files/files/data.txt",
                         content=b"x").status_code == 405


def test_rate_limit_answers_429_with_retry_after(server: Server) -> None:
    server.principal("chatty")
    with server.client("chatty") as chatty:
        answers = [chatty.get("/v1/profiles") for _ in range(80)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.status_code in (200, 429) for a in answers)
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"]["code"] == "rate_limited"


def test_configuration_and_health(server: Server) -> None:
    with server.client("alice") as alice:
        profiles = {p["name"]: p for p in alice.get("/v1/profiles").json()}
        assert set(profiles) == {"standard", "strict"}
        assert profiles["standard"]["digest"].startswith("sha256:")
        policy = alice.get("/v1/policies").json()
        assert (policy["name"], policy["version"]) == ("default", "1.0.0")
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] and set(ready["checks"]) >= {"docker", "store", "signing_key",
                                                       "policy_bundle"}
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/submissions" in schema["paths"]


def test_client_raises_with_the_stable_code(server: Server) -> None:
    with SandgateClient(server.url, server.keys["alice"]) as client, \
            pytest.raises(ClientError) as caught:
        client.get("does-not-exist")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_sandgate_submit_cli_talks_to_the_service(server: Server, tmp_path: Path) -> None:
    (tmp_path / "job.sh").write_text("echo from-cli\n")
    done = subprocess.run([str(BIN / "sandgate"), "submit", str(tmp_path / "job.sh"), "--url",
                           server.url, "--workspace", "alice-cli", "--wait", "30"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**server.env, "SANDGATE_API_KEY": server.keys["alice"]})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["state"], result["stdout"], result["language"]) == ("committed",
                                                                      "from-cli\n", "sh")


def test_a_second_service_or_a_reconcile_cannot_take_its_data_directory(
        server: Server) -> None:
    # Each would reconcile: remove this service's containers, end its submissions.
    refused = server.cli("reconcile")
    assert refused.returncode == 2, refused.stdout
    assert "in use by sandgate serve" in refused.stderr and "data_dir_in_use" in refused.stderr
    second = subprocess.run([str(BIN / "sandgate"), "serve", "--port", str(free_port())],
                            env=server.env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert second.returncode == 2 and "in use by sandgate serve" in second.stderr
    with server.client("alice") as alice:
        done = alice.post("/v1/submissions", params={"wait": 30},
                          json={"language": "python", "code": "print(1)"}).json()
    assert done["state"] == "committed", done
