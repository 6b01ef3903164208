"""The load suite: hostile tenants replayed against a real ``sandgate serve`` on loopback.

Every server here is started with small, explicit settings (``make_server``), stopped at the
end, and leaves no container behind. Bounds are the issue's: generous for a shared, noisy
two-core machine, but each one far below what the attack cost before it was fixed.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from tests.api.conftest import Server, make_server
from tests.conftest import owned_containers

TERMINAL = frozenset({"committed", "rolled_back", "quarantined", "denied"})
SETTLED = TERMINAL | {"awaiting_approval"}
MB = 1_000_000


def start(tmp: Path, name: str, principals: dict[str, str], **settings: str) -> Server:
    """A started server named ``name`` with ``principals`` (name: role)."""
    server = make_server(tmp, name, **settings)
    for principal, role in principals.items():
        server.principal(principal, role)
    server.start()
    return server


def stop(server: Server) -> None:
    """Stop ``server`` (draining its runs) and check it left no container behind."""
    server.stop()
    assert owned_containers(server.owner) == []


def rss(server: Server) -> int:
    """The server's resident set (VmRSS), in bytes."""
    assert server.process is not None
    return int(psutil.Process(server.process.pid).memory_info().rss)


class PeakRss:
    """Samples the server's RSS every ``period`` seconds while in use; ``growth`` is the
    peak seen above the value at entry."""

    def __init__(self, server: Server, period: float = 0.05) -> None:
        self.server = server
        self.period = period
        self.before = 0
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.before = self.peak = rss(self.server)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.server))

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def _sample(self) -> None:
        while not self._done.wait(self.period):
            self.peak = max(self.peak, rss(self.server))


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` took."""
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def wait_states(client: httpx.Client, ids: list[str], states: frozenset[str] = SETTLED,
                timeout: float = 180) -> dict[str, dict[str, object]]:
    """Poll each submission until it is in ``states``; their views."""
    deadline = time.monotonic() + timeout
    views: dict[str, dict[str, object]] = {}
    pending = list(ids)
    while pending:
        assert time.monotonic() < deadline, f"not settled after {timeout}s: {pending}"
        for sid in list(pending):
            answer = client.get(f"/v1/submissions/{sid}")
            assert answer.status_code == 200, answer.text[:500]
            view = answer.json()
            if view["state"] in states:
                views[sid] = view
                pending.remove(sid)
        if pending:
            time.sleep(0.5)
    return views


def submit_retrying(client: httpx.Client, body: dict[str, object], timeout: float = 120,
                    wait: float = 0) -> httpx.Response:
    """POST a submission, retrying a 429 (after its Retry-After, at most 2 s) until
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.post("/v1/submissions", params={"wait": wait} if wait else None,
                             json=body)
        if answer.status_code != 429 or time.monotonic() > deadline:
            return answer
        time.sleep(min(2.0, float(answer.headers.get("Retry-After", "1"))))


@contextmanager
def running(tmp: Path, name: str, principals: dict[str, str],
            **settings: str) -> Iterator[Server]:
    """A started server, stopped (and checked for leftovers) however the block ends."""
    server = start(tmp, name, principals, **settings)
    try:
        yield server
    finally:
        stop(server)
