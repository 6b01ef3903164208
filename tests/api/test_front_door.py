"""The front door of the real service: identity before any body byte, slow heads cut off,
event streams bounded, concurrent policy reloads, failed keys limited per source (which
X-Forwarded-For does not change) without locking a valid key out."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from controller.api.limits import Limits
from controller.settings import Settings
from tests.api.conftest import Server, make_server
from tests.conftest import bundle_with, parking_rule

pytestmark = pytest.mark.docker
HEAD_TIMEOUT = 2.0
# Until Settings has the field, the default deadline applies.
WIRED_HEAD_TIMEOUT = (HEAD_TIMEOUT if "header_timeout_s" in Settings.model_fields
                      else Limits().header_timeout_s)
MANY_FILES = "for i in range(5):\n    open(f'n{i}', 'w').write('x')"


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A service whose bundle parks a run creating more than 3 files (an event stream on a
    parked submission stays open)."""
    tmp = tmp_path_factory.mktemp("door")
    bundle = bundle_with(tmp, "bundle", parking_rule(3))
    server = make_server(tmp, "door", policy_dir=str(bundle), policy_watch_s="0",
                         header_timeout_s=str(HEAD_TIMEOUT))
    for name, role in (("alice", "agent"), ("bob", "agent"), ("root", "admin")):
        server.principal(name, role)
    server.start()
    yield server
    server.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_unauthenticated_bodies_are_refused_unread(door: Server) -> None:
    assert door.process is not None
    before = cpu_seconds(door.process.pid)
    head = (b"POST /v1/submissions HTTP/1.1\r\nHost: sandgate\r\n"
            b"Content-Type: application/json\r\nContent-Length: 15728640\r\n\r\n")
    sockets = [socket.create_connection(("127.0.0.1", door.port)) for _ in range(30)]
    try:
        for sock in sockets:
            sock.sendall(head + b"{\"code\": \"" + b"x" * 1024)
        started = time.monotonic()
        health = httpx.get(f"{door.url}/healthz", timeout=5)
        assert health.status_code == 200 and time.monotonic() - started < 1
        for sock in sockets:
            answer = read_until_closed(sock, 5)  # the server closes: the rest is never read
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["error"]["code"] == "unauthenticated"
    finally:
        for sock in sockets:
            sock.close()
    assert cpu_seconds(door.process.pid) - before < 2


def test_heads_that_never_end_are_cut_off(door: Server) -> None:
    sockets = [socket.create_connection(("127.0.0.1", door.port)) for _ in range(50)]
    started = time.monotonic()
    try:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: sandgate\r\n")
        while time.monotonic() - started < WIRED_HEAD_TIMEOUT - 0.5:  # trickle, never end
            for sock in sockets:
                sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.4)
        prompt = time.monotonic()
        assert httpx.get(f"{door.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - prompt < 1
        for sock in sockets:
            assert read_until_closed(sock, WIRED_HEAD_TIMEOUT + 3) == b""
        assert time.monotonic() - started < WIRED_HEAD_TIMEOUT + 3
    finally:
        for sock in sockets:
            sock.close()


def park(server: Server, who: str, workspace: str) -> str:
    with server.client(who) as client:
        answer = client.post("/v1/submissions?wait=30", json={
            "language": "python", "code": MANY_FILES, "workspace": workspace})
    assert answer.json()["state"] == "awaiting_approval", answer.text
    return str(answer.json()["id"])


def test_event_streams_are_bounded(door: Server) -> None:
    parked = park(door, "alice", "alice-streams")
    path = f"/v1/submissions/{parked}/events"
    with door.client("alice") as alice, door.client("bob") as bob, ExitStack() as streams:
        past = {"Last-Event-ID": "999999999999"}
        held = [streams.enter_context(alice.stream("GET", path, headers=past))
                for _ in range(8)]
        assert [s.status_code for s in held] == [200] * 8
        refused = alice.get(path, headers=past)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert bob.get(path).status_code == 404
        held[0].close()  # the client goes away: its place is given back
        deadline = time.monotonic() + 5
        while True:
            with alice.stream("GET", path, headers=past) as again:
                if again.status_code == 200 or time.monotonic() > deadline:
                    break
            time.sleep(0.1)
        assert again.status_code == 200
        bad = alice.get(path, headers={"Last-Event-ID": "9" * 5000})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
        done = alice.post("/v1/submissions?wait=30", json={"language": "python",
                                                           "code": "print(1)"}).json()
        ended = f"/v1/submissions/{done['id']}/events"
        started = time.monotonic()
        assert alice.get(ended, headers=past).text == ""  # terminal, nothing after: closed
        assert time.monotonic() - started < 3


def test_concurrent_policy_reloads_all_answer_200(door: Server) -> None:
    """Each round changes the bundle (so its new digest is not archived yet), then reloads it
    from 20 threads at once."""
    rules = Path(door.env["SANDGATE_POLICY_DIR"]) / "policies" / "reload-test.cedar"
    with door.client("root") as root, ThreadPoolExecutor(20) as pool:
        for round in range(5):
            extra = parking_rule(10**6 + round).replace("run_unattended.many-new-files",
                                                        "run_unattended.reload-test")
            rules.write_text(extra)
            answers = list(pool.map(lambda _: root.post("/v1/policies/reload"), range(20)))
            assert [a.status_code for a in answers] == [200] * 20, [
                a.text for a in answers if a.status_code != 200][:3]
            digests = {a.json()["digest"] for a in answers}
            assert len(digests) == 1
            archived = door.data / "bundles" / digests.pop().removeprefix("sha256:")
            assert (archived / "policies" / "reload-test.cedar").read_text() == extra
            time.sleep(1.2)  # within the per-principal rate limit (20 requests a second)


def test_failed_keys_from_one_source_are_limited(door: Server) -> None:
    """Last in this module: afterwards this source's failing keys are answered 429 for a
    while. Each request claims another client with X-Forwarded-For: it is not believed."""
    answers = [httpx.get(f"{door.url}/v1/keys", headers={
        "Authorization": f"Bearer sg_{n:043d}", "X-Forwarded-For": f"203.0.113.{n}"})
        for n in range(20)]
    statuses = [a.status_code for a in answers]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    with door.client("bob") as bob:  # a valid key from there is answered all the same
        assert bob.get("/v1/keys").status_code == 200
        submitted = bob.post("/v1/submissions", json={"language": "python",
                                                      "code": "print(1)"})
        assert submitted.status_code in (200, 202), submitted.text
    assert httpx.get(f"{door.url}/v1/keys", headers={
        "Authorization": f"Bearer sg_{99:043d}"}).status_code == 429
