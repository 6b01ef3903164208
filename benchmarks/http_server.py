"""``sandgate serve`` as the HTTP benchmarks' server: a child process on its own port, data
directory and owner label, stopped by pid however a benchmark ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
import yaml

from controller.settings import SHIPPED_ROOT, Settings

BIN = Path(sys.executable).parent
CODE = "print(1)"
BODY = {"language": "python", "code": CODE}
BENCH_LABEL = "dev.sandgate.bench"  # on the baseline containers this benchmark creates
TERMINAL = frozenset({"committed", "rolled_back", "quarantined", "denied"})


@dataclass
class Server:
    """``sandgate serve`` as a child process, on its own port and data directory."""

    data: Path
    owner: str = field(default_factory=lambda: f"sandgate-bench-http-{os.getpid()}")
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    profiles: Path | None = None  # a profiles directory of its own (pools), else the shipped

    def __post_init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "SANDGATE_DATA_DIR": str(self.data), "SANDGATE_OWNER": self.owner}
        if self.profiles is not None:
            env["SANDGATE_PROFILES_DIR"] = str(self.profiles)
        return env

    def cli(self, *args: str) -> str:
        """Run ``sandgate ARGS`` against this server's data directory; its stdout."""
        done = subprocess.run([str(BIN / "sandgate"), *args], env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"sandgate {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def principal(self, name: str, role: str = "agent") -> str:
        """A new principal's API key (an agent's unless ``role`` says)."""
        return self.cli("principals", "add", name, "--role", role).strip()

    def start(self, timeout: float = 60) -> None:
        log = self.data / "server.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "sandgate"), "serve", "--port", str(self.port)], env=self.env,
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become ready: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (drain) by pid; SIGKILL and a reconcile if it does not end in time."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=Settings().drain_timeout_s + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self.cli("reconcile")


@contextlib.contextmanager
def serving(scratch: Path, pool: int = 0) -> Iterator[Server]:
    """A server (its ``standard`` profile keeping ``pool`` pairs ready, up to twice as many
    after misses), stopped by pid however the block ends; no container of it left."""
    data = scratch / "data"
    data.mkdir()
    server = Server(data, profiles=pooled_profiles(scratch, pool) if pool else None)
    try:
        yield server
    finally:
        server.stop()
        client = docker.from_env()
        try:
            for label in (f"dev.sandgate.owner={server.owner}", f"{BENCH_LABEL}={os.getpid()}"):
                for container in client.containers.list(all=True, filters={"label": label}):
                    container.remove(force=True)
        finally:
            client.close()


def pooled_profiles(scratch: Path, pool: int) -> Path:
    """The shipped profiles, ``standard`` with a pool of ``pool`` pairs (max twice that)."""
    directory = scratch / "profiles"
    directory.mkdir()
    for source in (SHIPPED_ROOT / "profiles").glob("*.yaml"):
        raw = yaml.safe_load(source.read_text())
        raw["seccomp"] = str((source.parent / raw["seccomp"]).resolve())
        if source.stem == "standard":
            raw["pool"] = {"min": pool, "max": 2 * pool}
        (directory / source.name).write_text(yaml.safe_dump(raw))
    return directory


def settle(server: Server, keys: list[str], ids: list[str], timeout: float = 600
           ) -> dict[str, int]:
    """Wait until every submission in ``ids`` is terminal (or ``timeout``); states counted."""
    wanted, seen = set(ids), {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while time.monotonic() < deadline:
            for key in keys:
                page = http.get("/v1/submissions", params={"limit": 200},
                                headers={"Authorization": f"Bearer {key}"})
                if page.status_code == 200:
                    seen.update({s["id"]: s["state"] for s in page.json()["submissions"]
                                 if s["id"] in wanted})
            if all(seen.get(sid) in TERMINAL for sid in wanted):
                break
            time.sleep(1)
    return dict(Counter(seen.get(sid, "unseen") for sid in ids))
