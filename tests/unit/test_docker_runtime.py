"""The Docker runtime's supervision, on a scripted engine: nothing outlives a failed run."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
from docker.utils.socket import STDERR

from controller.adapters.runtime.capture import StreamReader
from controller.adapters.runtime.docker import DockerRuntime
from controller.adapters.runtime.netns import HeldNetns
from controller.adapters.runtime.sandbox import _Sampler
from controller.core.models import Phase
from controller.core.ports import RunSpec
from controller.errors import RuntimeUnavailableError
from controller.profiles.load import load_profiles
from controller.settings import SHIPPED_ROOT
from tests.unit.test_security_kit import HARDENED


class ScriptedContainer:
    """Starts, then fails when told to kill: the engine errs mid-run, the stream stays open."""

    id = short_id = "scripted"
    status = "running"  # still running at the deadline, so the supervisor kills it

    def __init__(self) -> None:
        # Configured as a sandbox must be, so that it passes the audit and gets started.
        self.attrs: dict[str, Any] = {**HARDENED, "State": {"Pid": os.getpid()}}
        self.removed = False

    def start(self) -> None:
        return None

    def reload(self) -> None:
        return None

    def kill(self, signal: str) -> None:
        raise docker.errors.APIError("the engine went away")

    def remove(self, force: bool, v: bool) -> None:
        self.removed = True


def test_a_failure_mid_run_leaves_no_thread_and_no_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = socket.socketpair()  # the daemon's end never writes and never closes
    held: list[HeldNetns] = []

    def hold(pid: int, owner: str) -> HeldNetns:  # this process's own: it is no container
        held.append(HeldNetns(os.open("/proc/self/ns/net", os.O_RDONLY)))
        return held[-1]

    monkeypatch.setattr(HeldNetns, "hold", staticmethod(hold))
    container = ScriptedContainer()
    client = SimpleNamespace(
        containers=SimpleNamespace(create=lambda **kwargs: container),
        api=SimpleNamespace(attach_socket=lambda *args, **kwargs: ours,
                            base_url="http+docker://localhost"),
        info=lambda: {"CgroupDriver": "systemd"})  # no run parent: nothing on the host
    profile = load_profiles(SHIPPED_ROOT / "profiles")["standard"]
    quick = profile.model_copy(update={"limits": profile.limits.model_copy(
        update={"wall_time_s": 0.2})})
    spec = RunSpec(submission_id="s", phase=Phase.DRY_RUN, profile=quick, command=("true",),
                   workspace_dir=tmp_path, code_dir=tmp_path, image="sha256:x")
    runtime = DockerRuntime(client=client, owner="test")
    with pytest.raises(RuntimeUnavailableError, match="went away"):
        runtime.run(spec)
    try:
        left = [t for t in threading.enumerate() if isinstance(t, StreamReader | _Sampler)]
        assert left == [], "the supervisor's threads outlived the run"
        assert ours.fileno() == -1, "the attach socket was left open"
        assert [h._fd for h in held] == [-1], "the network namespace was left held"
        assert container.removed
    finally:
        ours.close()
        theirs.close()


def test_the_reader_knows_the_engine_s_stderr_stream_number() -> None:
    assert StreamReader.STDERR == STDERR
