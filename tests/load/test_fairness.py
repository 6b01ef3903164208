"""Attack 8: one tenant keeps the run queue full; another's work still goes through.

Before the fix the queue was one FIFO shared by everyone: a tenant that kept it full of
three-second sleeps made every other tenant's ``print(1)`` wait behind them, or be refused.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server
from tests.load.conftest import TERMINAL, running

pytestmark = pytest.mark.docker

FLOODERS = 6
PROBES = 10
SLACK_S = 10.0
HOG = {"language": "python", "code": "import time\ntime.sleep(3)", "workspace": "hog"}
PRINT = {"language": "python", "code": "print(1)", "workspace": "small"}


def _timed_print(client: httpx.Client) -> tuple[int, str, float]:
    """(status, state, seconds) of one ``print(1)`` submitted with ``wait=30``."""
    began = time.monotonic()
    answer = client.post("/v1/submissions", params={"wait": 30}, json=PRINT)
    took = time.monotonic() - began
    state = str(answer.json().get("state")) if answer.status_code == 202 else ""
    return answer.status_code, state, took


class Flood:
    """Threads that keep submitting sleeps for ``name``, retrying each refusal."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.accepted = 0
        self.refused = 0
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(FLOODERS)]

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        with self.server.client(self.name) as client:
            while not self._stop.is_set():
                answer = client.post("/v1/submissions", json=HOG)
                if answer.status_code == 202:
                    self.accepted += 1
                elif answer.status_code in (429, 503):  # quota, or the whole queue, full
                    self.refused += 1
                    self._stop.wait(0.5)
                else:
                    self.unexpected.append(f"{answer.status_code} {answer.text[:200]}")
                    self._stop.wait(0.5)


def test_a_flooding_tenant_does_not_starve_another(tmp_path: Path) -> None:
    with running(tmp_path, "fair", {"hog": "agent", "small": "agent"}, workers="2",
                 queue_size="4", max_running_per_principal="1", max_queued_per_principal="2",
                 policy_watch_s="0") as server, server.client("small") as small:
        baseline = []
        for _ in range(3):
            status, state, took = _timed_print(small)
            assert (status, state) == (202, "committed")
            baseline.append(took)
        with Flood(server, "hog") as flood:
            deadline = time.monotonic() + 30
            while flood.refused == 0:  # the hog holds all it may: the queue is full for it
                assert time.monotonic() < deadline, "the flood never filled the queue"
                time.sleep(0.2)
            probes = [_timed_print(small) for _ in range(PROBES)]
            refused_meanwhile = flood.refused
        accepted = [(state, took) for status, state, took in probes if status == 202]
        print(f"baseline {max(baseline):.2f} s; under the flood {len(accepted)}/{PROBES} "
              f"accepted, slowest {max((t for _, _, t in probes), default=0):.2f} s; the hog "
              f"had {flood.accepted} accepted, {refused_meanwhile} refused")
        assert len(accepted) >= 0.9 * PROBES, probes
        slowest = max(baseline) + SLACK_S
        assert all(state in TERMINAL and took < slowest for state, took in accepted), (
            baseline, probes)
        assert not flood.unexpected, flood.unexpected
        assert refused_meanwhile > PROBES  # the hog kept knocking all along
