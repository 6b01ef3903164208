"""200 concurrent submissions with duplicated Idempotency-Keys: one submission per key."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import make_server
from tests.api.test_load_and_recovery import verify_all, wait_terminal

pytestmark = pytest.mark.docker


def test_duplicate_keys_under_concurrency_make_one_submission_each(tmp_path: Path) -> None:
    server = make_server(tmp_path, "storm", workers="2", queue_size="60", rate_per_s="500",
                         rate_burst="500")
    server.principal("agent")
    server.principal("audit", "auditor")
    server.start()
    try:
        def post(n: int) -> tuple[int, httpx.Response]:
            key = n % 25  # 25 keys, 8 requests each, all at once
            return key, httpx.post(
                f"{server.url}/v1/submissions", timeout=120,
                headers={"Authorization": f"Bearer {server.keys['agent']}",
                         "Idempotency-Key": f"key-{key}"},
                json={"language": "python", "code": f"print({key})",
                      "workspace": f"ws-{key}"})

        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(post, range(200)))
        ids: dict[int, set[str]] = defaultdict(set)
        for key, answer in answers:
            assert answer.status_code in (202, 503), answer.text
            if answer.status_code == 202:
                ids[key].add(answer.json()["id"])
        assert all(len(found) == 1 for found in ids.values()), ids
        accepted = sorted(sid for found in ids.values() for sid in found)
        with server.client("audit") as auditor:
            states = wait_terminal(auditor, accepted)
            listed = auditor.get("/v1/submissions", params={"limit": 200}).json()
        assert set(states.values()) == {"committed"}
        assert len(listed["submissions"]) == len(accepted)  # no duplicate was recorded
        receipts = verify_all(server, tmp_path, "audit")
        assert len(receipts) == len(accepted)
    finally:
        server.stop()
