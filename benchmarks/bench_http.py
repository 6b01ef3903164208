"""Sandgate's figures over HTTP, each beside baselines measured in the same run.

    .venv/bin/python -m benchmarks.bench_http [--runs N] [--out benchmarks/results.json]

A real ``sandgate serve`` (what ``make run`` starts) on a free loopback port, over a fresh
data directory with its own owner label, on the shipped defaults; its agents' keys come from
``sandgate principals add``. Measured, in this order:

- end-to-end latency of ``print(1)`` posted with ``?wait=30``, interleaved (the order turning
  each round) with three baselines: a raw hardened ``docker run --rm`` of the same code
  (``bench_pipeline.raw_docker_run``), the same run over the engine's API with networking
  disabled as Sandgate's are (which ``docker run`` cannot say), and a pre-started single-use
  container of the same hardening fed the code over stdin (created, attached and started
  untimed; timed: write the code, close stdin, read the output to its end, wait for the
  exit); with ``--pool``, each
  measure starts once the pool is full again (untimed), as it would be after an agent's
  think time, so no measure (a baseline included) runs beside a refill; and the mean time
  per stage, from the server's ``/metrics``;
- throughput: ``--clients`` clients, one agent each (so no two race on one workspace), post
  ``--submissions`` trivial submissions with ``?wait=60`` between them; then the engine's own
  ceiling on this machine: whole hardened container lives per second over its API, eight at
  a time, no controller involved (a submission needs two);
- a burst of ``--burst`` concurrent POSTs without ``?wait``, from the same agents, each on a
  connection of its own (bare HTTP/1.1 over asyncio streams: cheap for the shared CPUs),
  spread over as many loopback addresses as the server's connections per source require:
  answers by status, error code and message, rejections without Retry-After, time until
  every request had its answer, rejection (429/503) latency, the server's peak RSS sampled
  meanwhile and the CPU time it and the clients spent; then the accepted ones to their end;
- with ``--pool``: a pool exhausted on purpose (more submissions at once than it holds).

The figures go under ``"http"`` in ``--out``; every other key there is kept. Anything that
must not happen (a submission not committed, a connection error, a 5xx other than 503) is
listed under ``"problems"`` and makes the exit status 1, after the figures are written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
from docker.utils.socket import frames_iter
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_pipeline import PROFILE, raw_docker_run, summary
from benchmarks.http_burst import bench_burst
from benchmarks.http_server import BENCH_LABEL, BODY, CODE, Server, serving
from controller.settings import Settings

PRESTART_SETTLE_S = 0.5  # untimed: a pooled container has long finished starting python


@dataclass
class Prestarted:
    """A hardened single-use container running ``python3 -``, started, stdin attached."""

    id: str
    sock: Any


def prestart(client: Any, seccomp: str, *, network_disabled: bool = False) -> Prestarted:
    """Create, attach and start one; the same hardening as ``raw_docker_run`` (and, with
    ``network_disabled``, no network sandbox, as Sandgate's: no ``docker run`` flag says so)."""
    limits = PROFILE.limits
    host = client.api.create_host_config(
        network_mode="none", read_only=True, cap_drop=["ALL"],
        tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs_bytes}"},
        security_opt=["no-new-privileges", f"seccomp={seccomp}"], pids_limit=limits.pids,
        mem_limit=limits.memory_bytes, memswap_limit=limits.memory_bytes,
        log_config={"Type": "none", "Config": {}})
    created = client.api.create_container(
        PROFILE.image, ["python3", "-"], user="10001:10001", stdin_open=True, detach=False,
        labels={BENCH_LABEL: str(os.getpid())}, host_config=host,
        network_disabled=network_disabled)
    sock = client.api.attach_socket(
        created["Id"], params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    client.api.start(created["Id"])
    return Prestarted(created["Id"], sock)


def feed(client: Any, container: Prestarted, code: str) -> tuple[bytes, int]:
    """Write ``code``, close stdin, read the output to its end, wait: (stdout, status)."""
    raw = container.sock._sock
    raw.sendall(code.encode())
    raw.shutdown(socket.SHUT_WR)
    out = b"".join(chunk for stream, chunk in frames_iter(container.sock, tty=False)
                   if stream == 1)
    return out, int(client.api.wait(container.id)["StatusCode"])


def discard(client: Any, container: Prestarted) -> None:
    with contextlib.suppress(OSError):
        container.sock._sock.close()
    container.sock.close()
    client.api.remove_container(container.id, force=True)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class Rounds:
    """The three measures of a latency round; each appends its sample (ms) to ``samples``."""

    def __init__(self, server: Server, key: str, scratch: Path, problems: list[str]) -> None:
        self.seccomp_text = json.dumps(PROFILE.seccomp)
        self.seccomp = scratch / "seccomp.json"
        self.seccomp.write_text(self.seccomp_text)
        self.docker = docker.from_env()
        self.http = httpx.Client(base_url=server.url, timeout=90,
                                 headers={"Authorization": f"Bearer {key}"})
        self.problems = problems
        self.samples: dict[str, list[float]] = {"raw": [], "api": [], "prestarted": [],
                                                "http": []}
        self.states: Counter[str] = Counter()

    def raw(self) -> None:
        start = time.perf_counter()
        raw_docker_run(self.seccomp)
        self.samples["raw"].append(ms_since(start))

    def api(self) -> None:
        """The same run over the engine's API with networking disabled, all of it timed:
        the cheapest cold hardened run this engine offers."""
        start = time.perf_counter()
        container = prestart(self.docker, self.seccomp_text, network_disabled=True)
        try:
            out, status = feed(self.docker, container, CODE)
        finally:
            discard(self.docker, container)
        self.samples["api"].append(ms_since(start))
        if (out, status) != (b"1\n", 0):
            self.problems.append(f"API run: exit {status}, stdout {out[:200]!r}")

    def prestarted(self) -> None:
        container = prestart(self.docker, self.seccomp_text)
        try:
            time.sleep(PRESTART_SETTLE_S)
            start = time.perf_counter()
            out, status = feed(self.docker, container, CODE)
            self.samples["prestarted"].append(ms_since(start))
        finally:
            discard(self.docker, container)
        if (out, status) != (b"1\n", 0):
            self.problems.append(f"pre-started container: exit {status}, stdout {out[:200]!r}")

    def over_http(self) -> None:
        start = time.perf_counter()
        answer = self.http.post("/v1/submissions", params={"wait": 30}, json=BODY)
        self.samples["http"].append(ms_since(start))
        state = answer.json().get("state") if answer.status_code == 202 else None
        self.states[state or f"http {answer.status_code}"] += 1

    def reset(self) -> None:
        for values in self.samples.values():
            values.clear()
        self.states.clear()

    def close(self) -> None:
        self.http.close()
        self.docker.close()


def bench_latency(runs: int, server: Server, key: str, auditor: str, scratch: Path,
                  problems: list[str], settle: Callable[[], None] = lambda: None
                  ) -> dict[str, Any]:
    """``print(1)`` over HTTP with ``?wait``, beside the two baselines, interleaved; and
    where its time went, stage by stage, as the server's own metrics say. ``settle`` runs
    untimed before each measure (a pooled server refills meanwhile, as it would while an
    agent thinks: no measure, the baselines included, runs beside a refill)."""
    rounds = Rounds(server, key, scratch, problems)
    measures: list[Callable[[], None]] = [rounds.raw, rounds.api, rounds.prestarted,
                                          rounds.over_http]
    try:
        for measure in measures:  # warm-up, untimed: image cache, server, connection
            measure()
        rounds.reset()
        before = stage_totals(server, auditor)
        for n in range(runs):
            for measure in measures[n % len(measures):] + measures[:n % len(measures)]:
                settle()
                measure()
        after = stage_totals(server, auditor)
    finally:
        rounds.close()
    samples, states = rounds.samples, rounds.states
    if states["committed"] != runs:
        problems.append(f"latency: not all committed: {dict(states)}")
    http_p50 = statistics.median(samples["http"])
    return {
        "raw_docker_run_rm": summary(samples["raw"]),
        "api_run_network_disabled": summary(samples["api"]),
        "prestarted_stdin": summary(samples["prestarted"]),
        "http_wait": summary(samples["http"]),
        "http_states": dict(states),
        "ratio_p50_vs_raw_docker_run": round(http_p50 / statistics.median(samples["raw"]), 2),
        "ratio_p50_vs_api_run": round(http_p50 / statistics.median(samples["api"]), 2),
        "ratio_p50_vs_prestarted": round(http_p50 / statistics.median(samples["prestarted"]),
                                         2),
        "stages_mean_ms": stages_mean_ms(before, after),
    }


def stage_totals(server: Server, key: str) -> dict[str, tuple[float, float]]:
    """Each stage's (seconds, count) so far, from the server's ``/metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=30,
                     headers={"Authorization": f"Bearer {key}"}).text
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "sandgate_stage_duration_seconds":
            continue
        for sample in family.samples:
            pair = totals.setdefault(sample.labels.get("stage", ""), [0.0, 0.0])
            if sample.name.endswith("_sum"):
                pair[0] = sample.value
            elif sample.name.endswith("_count"):
                pair[1] = sample.value
    return {stage: (pair[0], pair[1]) for stage, pair in totals.items()}


def stages_mean_ms(before: dict[str, tuple[float, float]],
                   after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The mean time per submission in each stage between two ``stage_totals``."""
    means = {}
    for stage, (seconds, count) in after.items():
        was = before.get(stage, (0.0, 0.0))
        if count > was[1]:
            means[stage] = round((seconds - was[0]) / (count - was[1]) * 1000, 1)
    return means


async def _throughput(url: str, keys: list[str], count: int
                      ) -> tuple[float, list[float], Counter[str]]:
    todo = iter(range(count))
    latencies: list[float] = []
    states: Counter[str] = Counter()

    async def client(key: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=90,
                                     headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in todo:
                start = time.perf_counter()
                answer = await http.post("/v1/submissions", params={"wait": 60}, json=BODY)
                latencies.append(ms_since(start))
                state = answer.json().get("state") if answer.status_code == 202 else None
                states[state or f"http {answer.status_code}"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(key) for key in keys))
    return time.perf_counter() - start, latencies, states


def bench_throughput(server: Server, keys: list[str], count: int,
                     problems: list[str]) -> dict[str, Any]:
    """Trivial submissions/s, one client per key, each waiting for its last to end; beside
    the engine's own ceiling on this machine, measured right after."""
    seconds, latencies, states = asyncio.run(_throughput(server.url, keys, count))
    not_committed = count - states["committed"]
    if not_committed:
        problems.append(f"throughput: {not_committed} of {count} not committed: {dict(states)}")
    per_s = count / seconds
    ceiling = engine_ceiling(2 * count, problems)
    return {"clients": len(keys), "submissions": count, "seconds": round(seconds, 2),
            "per_s": round(per_s, 2), "not_committed": not_committed,
            "states": dict(states), "latency": summary(latencies),
            "engine_ceiling": ceiling,
            # Two sandboxes per submission: the most the engine alone allows.
            "ratio_vs_engine_ceiling": round(per_s / (ceiling["containers_per_s"] / 2), 2)}


def engine_ceiling(count: int, problems: list[str], threads: int = 8) -> dict[str, Any]:
    """Whole hardened container lives per second (create, attach, start, feed ``print(1)``,
    read, wait, remove), ``threads`` at a time over the engine's API, networking disabled as
    Sandgate's: what the engine alone can do on this machine, no controller in the way."""
    seccomp = json.dumps(PROFILE.seccomp)
    client = docker.from_env(max_pool_size=2 * threads)

    def life(_: int) -> None:
        container = prestart(client, seccomp, network_disabled=True)
        try:
            out, status = feed(client, container, CODE)
        finally:
            discard(client, container)
        if (out, status) != (b"1\n", 0):
            problems.append(f"engine ceiling: exit {status}, stdout {out[:200]!r}")

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(life, range(threads)))  # warm-up, untimed
            start = time.perf_counter()
            list(pool.map(life, range(count)))
            seconds = time.perf_counter() - start
    finally:
        client.close()
    return {"threads": threads, "containers": count, "seconds": round(seconds, 2),
            "containers_per_s": round(count / seconds, 2)}


def bench_pool_exhausted(server: Server, keys: list[str], auditor: str, pooled: int,
                         problems: list[str]) -> dict[str, Any]:
    """Latency and answers with the pool emptied on purpose: four times its pairs at once,
    so most find none and start their own. They must fall back to cold starts, never to
    errors."""
    if not pooled:
        return {"measured": False, "why": "the server keeps no pool (--pool 0)"}
    before = pool_state(server, auditor)
    count = 4 * pooled
    seconds, latencies, states = asyncio.run(_throughput(server.url, keys[:count], count))
    after = pool_state(server, auditor)
    if states["committed"] != count:
        problems.append(f"pool exhausted: not all committed: {dict(states)}")
    return {"measured": True, "submissions": count, "seconds": round(seconds, 2),
            "states": dict(states), "latency": summary(latencies),
            "hits": after["hits"] - before["hits"], "misses": after["misses"] - before["misses"]}


def pool_full(server: Server, key: str, pairs: int, problems: list[str],
              timeout: float = 60) -> None:
    """Wait until the pool holds ``pairs`` pairs again (none kept: at once)."""
    deadline = time.monotonic() + timeout
    while pairs and pool_state(server, key).get("ready", 0) < pairs:
        if time.monotonic() > deadline:
            problems.append(f"the pool did not refill to {pairs} in {timeout:g} s")
            return
        time.sleep(0.05)


def pool_state(server: Server, key: str) -> dict[str, int]:
    """The standard profile's pool, as an auditor sees it (agents do not)."""
    found = httpx.get(f"{server.url}/v1/profiles", timeout=30,
                      headers={"Authorization": f"Bearer {key}"}).json()
    pool: dict[str, int] = {p["name"]: p["pool"] for p in found}["standard"] or {}
    return pool


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def server_settings() -> dict[str, Any]:
    """What shapes the figures (the shipped defaults unless this environment sets them)."""
    settings = Settings()
    names = ("workers", "queue_size", "rate_per_s", "rate_burst", "max_connections",
             "connections_per_source")
    return {name: getattr(settings, name) for name in names}


def merge(out: Path, key: str, figures: dict[str, Any]) -> None:
    """Write ``figures`` under ``key`` in ``out``, keeping everything else there."""
    results: dict[str, Any] = {}
    if out.exists():
        results = json.loads(out.read_text())
    results[key] = figures
    draft = out.with_name(f".{out.name}.tmp")
    draft.write_text(json.dumps(results, indent=2) + "\n")
    draft.replace(out)


def run(args: argparse.Namespace, scratch: Path, problems: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine": machine(), "server": server_settings()}
    with serving(scratch, args.pool) as server:
        latency_key = server.principal("bench-latency")
        auditor = server.principal("bench-auditor", "auditor")
        keys = [server.principal(f"bench-client-{n:02}") for n in range(args.clients)]
        server.start()
        if args.pool:  # the pool full before anything is timed
            deadline = time.monotonic() + 120
            while pool_state(server, auditor).get("ready", 0) < args.pool:
                if time.monotonic() > deadline:
                    problems.append("the pool did not fill in 120 s")
                    break
                time.sleep(0.5)
        figures["end_to_end_print1"] = bench_latency(
            args.runs, server, latency_key, auditor, scratch, problems,
            settle=lambda: pool_full(server, auditor, args.pool, problems))
        figures["throughput"] = bench_throughput(server, keys, args.submissions, problems)
        figures["burst"] = bench_burst(server, keys, args.burst, problems)
        figures["pool_exhausted"] = bench_pool_exhausted(server, keys, auditor, args.pool,
                                                         problems)
        if args.pool:
            figures["pool"] = pool_state(server, auditor)
    figures["machine"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="latency rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--clients", type=int, default=16, help="throughput clients")
    parser.add_argument("--submissions", type=int, default=64, help="throughput submissions")
    parser.add_argument("--burst", type=int, default=1000, help="concurrent POSTs")
    parser.add_argument("--pool", type=int, default=0,
                        help="pairs the standard profile keeps ready (0: no pool)")
    parser.add_argument("--key", default="http", help="where the figures go in --out")
    args = parser.parse_args()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-http-") as tmp:
        figures = run(args, Path(tmp), problems)
    figures["problems"] = problems
    merge(args.out, args.key, figures)
    print(json.dumps(figures, indent=2))
    if problems:
        print("problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
