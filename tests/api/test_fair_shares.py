"""A tenant flooding the real service cannot starve another: its overflow is refused (429,
naming its quota) while the other's submissions are all accepted and finish about as fast as
on an idle service."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, make_server
from tests.conftest import owned_containers

pytestmark = pytest.mark.docker
SLEEPER = "import time\ntime.sleep(2)"
BODY_TIMEOUT_S = 8.0


def timed_print(client: httpx.Client, n: int) -> float:
    """Seconds from submission to a committed ``print(n)`` (waiting on the server)."""
    start = time.monotonic()
    answer = client.post("/v1/submissions", params={"wait": 30}, json={
        "language": "python", "code": f"print({n})", "workspace": f"b{n}"})
    elapsed = time.monotonic() - start
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "committed", answer.json()["reason"]
    return elapsed


def unread_post(server: Server, key: str) -> bytes:
    """A submission's head and the first KiB of a 64 KiB body (the rest never sent): the
    server's whole answer, read until it closes the connection."""
    head = (f"POST /v1/submissions HTTP/1.1\r\nHost: sandgate\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 65536\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + b'{"code": "' + b"x" * 1024)
        sock.settimeout(BODY_TIMEOUT_S - 2)  # an answer only after the timeout fails here
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_flooding_tenant_does_not_starve_another(tmp_path: Path) -> None:
    # Two workers, so each tenant may run one sandbox at a time (half, rounded up); a's own
    # quota caps its waiting submissions at 8 (b has the default, 32). A drain of 1 s: a's
    # backlog is left to the reconcile of the restart below, not waited for.
    server = make_server(tmp_path, "fair", workers="2", drain_timeout_s="1",
                         policy_watch_s="0", body_timeout_s=str(BODY_TIMEOUT_S))
    server.principal("a")
    server.principal("b")
    quota = server.cli("principals", "quota", "a", "--max-queued", "8")
    assert quota.returncode == 0, quota.stderr
    server.start()
    try:
        with server.client("b") as b:
            baseline = max(timed_print(b, n) for n in range(2))

            def flood(n: int) -> httpx.Response:
                return httpx.post(f"{server.url}/v1/submissions", timeout=60,
                                  headers={"Authorization": f"Bearer {server.keys['a']}"},
                                  json={"language": "python", "code": SLEEPER,
                                        "workspace": f"a{n}"})

            with ThreadPoolExecutor(max_workers=20) as pool:
                answers = list(pool.map(flood, range(20)))
            accepted = [a for a in answers if a.status_code == 202]
            refused = [a for a in answers if a.status_code != 202]
            # One running and eight waiting, give or take the one a worker took meanwhile.
            assert 8 <= len(accepted) <= 10, [a.status_code for a in answers]
            for answer in refused:
                assert answer.status_code == 429, answer.text
                assert answer.json()["error"]["code"] == "rate_limited"
                assert "max_queued" in answer.json()["error"]["message"]
                assert int(answer.headers["Retry-After"]) >= 1
            # The next one is refused from its head: the server does not wait for a body
            # that never comes (else a 408 after body_timeout_s), nor read it.
            refusal = unread_post(server, server.keys["a"])
            assert refusal.startswith(b"HTTP/1.1 429"), refusal[:300]
            head, _, body = refusal.partition(b"\r\n\r\n")
            assert b"connection: close" in head.lower() and b"retry-after:" in head.lower()
            assert json.loads(body)["error"]["code"] == "rate_limited"
            # a's backlog is 9 runs of 4 s and more on one worker (dry run and real run): a
            # single queue would make b wait half a minute. b's share runs beside it.
            latencies = [timed_print(b, n) for n in range(2, 7)]
            assert max(latencies) < baseline + 10, (baseline, latencies)
            states = {s["state"] for s in b.get("/v1/submissions").json()["submissions"]}
            assert states == {"committed"}
    finally:
        server.stop()
        server.start()  # reconciles: a's unfinished submissions end, their containers and
        server.stop()  # scratch filesystems go
    assert owned_containers(server.owner) == []
