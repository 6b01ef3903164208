"""A real service: `sandgate serve` as a subprocess on loopback, over a fresh data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import owned_containers

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    data: Path
    owner: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "sandgate"), *args], capture_output=True, text=True,
                              env=self.env, timeout=120, check=False)

    def principal(self, name: str, role: str = "agent") -> str:
        done = self.cli("principals", "add", name, "--role", role)
        assert done.returncode == 0, done.stderr
        self.keys[name] = done.stdout.strip()
        return self.keys[name]

    def start(self) -> None:
        with (self.data / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "sandgate"), "serve", "--port", str(self.port)], env=self.env,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                ready = False  # not listening yet
            if ready:
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not become ready; see {self.data / 'server.log'}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=90)
        self.process = None

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=90,
                            headers={"Authorization": f"Bearer {self.keys[name]}"})


def make_server(tmp: Path, name: str, **settings: str) -> Server:
    data = tmp / name
    data.mkdir(parents=True)
    owner = f"sandgate-api-{name}-{os.getpid()}"
    env = {**os.environ, "SANDGATE_DATA_DIR": str(data), "SANDGATE_OWNER": owner,
           **{f"SANDGATE_{key.upper()}": value for key, value in settings.items()}}
    return Server(data=data, owner=owner, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service for the module, with agents alice and bob, an auditor and an admin."""
    running = make_server(tmp_path_factory.mktemp("api"), "main")
    for name, role in (("alice", "agent"), ("bob", "agent"), ("audrey", "auditor"),
                       ("root", "admin"), ("revoked", "agent")):
        running.principal(name, role)
    assert running.cli("principals", "revoke", "revoked").returncode == 0
    running.start()
    yield running
    running.stop()
    assert owned_containers(running.owner) == []
