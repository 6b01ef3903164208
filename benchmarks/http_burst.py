"""A burst of concurrent POSTs against the benchmark's server: every request on a connection
of its own (bare HTTP/1.1 over asyncio streams: cheap for the shared CPUs), its answer, how
long it took, and what the server used meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from benchmarks.bench_pipeline import percentile
from benchmarks.http_server import BODY, Server, settle
from controller.settings import Settings

SOURCE_MARGIN = 6  # connections per loopback address kept below the server's limit
REJECTED = (429, 503)
SAID_NUMBERS = re.compile(r"[0-9]+(\.[0-9]+)?")
SAID_NAMES = re.compile(r"'[^']*'")
SAID_CHARS = 72  # of an error message, enough to tell the refusals apart


@dataclass
class Answer:
    """One burst request: its status (0: none) or the exception that ended it."""

    status: int = 0
    code: str = ""
    retry_after: bool = False
    ms: float = 0.0
    ended: float = 0.0
    failure: str = ""
    id: str = ""
    said: str = ""  # the error message, numbers and quoted names blanked


class ServerUse:
    """The server's peak RSS, sampled every ``period`` s in a thread while in the block, and
    the CPU time it and this process (the clients) spent meanwhile."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.period = period
        self.before = self.peak = 0
        self.server_cpu_s = self.client_cpu_s = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ServerUse:
        self.before = self.peak = self.process.memory_info().rss
        self.server_cpu_s, self.client_cpu_s = self._cpu(), -time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.server_cpu_s = self._cpu() - self.server_cpu_s
        self.client_cpu_s += time.process_time()

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def _sample(self) -> None:
        while not self._done.wait(self.period):
            self.peak = max(self.peak, self.process.memory_info().rss)


async def _post(port: int, source: str, key: str, index: int) -> Answer:
    """One POST on a connection of its own from ``source`` (``Connection: close``, read to its
    end): a bare HTTP/1.1 exchange, so a thousand clients take little of the CPUs the server
    shares with them."""
    body = json.dumps({**BODY, "workspace": f"burst-{index}"}).encode()
    head = (f"POST /v1/submissions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = Answer()
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(head + body)
        reply = await asyncio.wait_for(reader.read(), 120)
        writer.close()
    except OSError as exc:  # TimeoutError and ConnectionError too
        answer.failure = type(exc).__name__
    answer.ended = time.perf_counter()
    answer.ms = (answer.ended - start) * 1000
    if not answer.failure:
        _read_reply(reply, answer)
    return answer


def _read_reply(reply: bytes, answer: Answer) -> None:
    """Status, Retry-After, and the error code and message (or the id) of one reply."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        answer.failure = "no status line" if reply else "closed without an answer"
        return
    answer.status = int(status[1])
    answer.retry_after = any(line.lower().startswith("retry-after:") for line in lines[1:])
    answer.code = "(no error body)" if answer.status >= 400 else ""
    with contextlib.suppress(ValueError, AttributeError):
        payload = json.loads(body)
        answer.id = str(payload.get("id", ""))
        error = payload.get("error") or {}
        answer.code = str(error.get("code", answer.code))
        said = SAID_NAMES.sub("'...'", SAID_NUMBERS.sub("N", str(error.get("message", ""))))
        answer.said = said[:SAID_CHARS]


async def _burst(port: int, keys: list[str], count: int, per_source: int
                 ) -> tuple[float, list[Answer]]:
    sources = [f"127.0.0.{n + 1}" for n in range(math.ceil(count / per_source))]
    start = time.perf_counter()
    answers = await asyncio.gather(*(_post(port, sources[n % len(sources)], keys[n % len(keys)],
                                           n) for n in range(count)))
    return max(answer.ended for answer in answers) - start, list(answers)


def bench_burst(server: Server, keys: list[str], count: int,
                problems: list[str]) -> dict[str, Any]:
    """``count`` POSTs at once, each on its own connection; then the accepted to their end."""
    per_source = max(1, Settings().connections_per_source - SOURCE_MARGIN)
    assert server.process is not None
    with ServerUse(server.process.pid) as use:
        seconds, answers = asyncio.run(_burst(server.port, keys, count, per_source))
    statuses = Counter(str(a.status) if a.status else f"error {a.failure}" for a in answers)
    rejected = [a for a in answers if a.status in REJECTED]
    missing = check_answers(statuses, rejected, problems)
    accepted = [a.id for a in answers if a.status == 202]
    states = settle(server, keys, accepted)
    if states.get("committed", 0) != len(accepted):
        problems.append(f"burst: accepted submissions not all committed: {states}")
    latencies = [a.ms for a in rejected] or [0.0]
    return {
        "requests": count, "sources": math.ceil(count / per_source),
        "statuses": dict(sorted(statuses.items())),
        "rejections": dict(Counter(f"{a.status} {a.code}: {a.said}".rstrip(": ")
                                   for a in rejected).most_common()),
        "rejections_without_retry_after": missing,
        "seconds_to_all_answers": round(seconds, 2),
        "rejection_ms": {"n": len(rejected), "p50": round(statistics.median(latencies), 1),
                         "p99": round(percentile(latencies, 0.99), 1),
                         "max": round(max(latencies), 1)},
        "accepted_ms_p50": round(statistics.median([a.ms for a in answers if a.status == 202]
                                                   or [0.0]), 1),
        "server_rss_mb": {"before": round(use.before / 1e6, 1), "peak": round(use.peak / 1e6, 1)},
        "cpu_s": {"server": round(use.server_cpu_s, 2), "clients": round(use.client_cpu_s, 2)},
        "accepted_states": states,
    }


def check_answers(statuses: Counter[str], rejected: list[Answer], problems: list[str]) -> int:
    """Note answers other than 202, 429 and 503 (connection errors too); how many
    rejections came without Retry-After (worth a remark, not a failure)."""
    bad = {k: n for k, n in statuses.items() if k not in ("202", "429", "503")}
    if bad:
        problems.append(f"burst: answers other than 202/429/503: {bad}")
    return sum(not a.retry_after for a in rejected)
