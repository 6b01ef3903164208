"""A scripted runtime for unit tests of the service: no containers, no engine.

Each run calls a behaviour with the spec; the behaviour may change the run's workspace
directory (as code would) and returns what the "container" did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.core.models import AuditSource, Observation, StreamSummary
from controller.core.ports import KilledFromOutsideError, RunResult, RunSpec
from controller.errors import RuntimeUnavailableError


@dataclass(frozen=True)
class Outcome:
    """What a fake run reports; the defaults are a clean, successful run."""

    exit_code: int = 0
    stdout: bytes = b""
    oom_killed: bool = False
    timed_out: bool = False
    seccomp_killed: bool = False
    pids_limit_hit: bool = False
    fail: bool = False  # the engine itself fails
    incomplete: str | None = None  # kernel records lost
    killed_outside: bool = False  # the engine recorded a stranger's kill (after the run)


Behaviour = Callable[[RunSpec], Outcome]


def _content_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


@dataclass
class FakeRuntime:
    """``images`` resolves a name to an id (raising ``RuntimeUnavailableError`` = unknown)."""

    behaviour: Behaviour = field(default=lambda spec: Outcome())
    runs: list[RunSpec] = field(default_factory=list)
    started: list[RunSpec] = field(default_factory=list)  # by ``start`` (then run or not)
    discarded: list[RunSpec] = field(default_factory=list)  # started, never run
    images: Callable[[str], str] = _content_id
    resolved: list[str] = field(default_factory=list)
    source: AuditSource = AuditSource.NETLINK

    def start(self, spec: RunSpec) -> FakeSandbox:
        self.started.append(spec)
        return FakeSandbox(self, spec)

    def run(self, spec: RunSpec) -> RunResult:
        self.runs.append(spec)
        outcome = self.behaviour(spec)
        if outcome.fail:
            raise RuntimeUnavailableError("fake engine failure")
        summary = StreamSummary(size=len(outcome.stdout),
                                sha256=hashlib.sha256(outcome.stdout).hexdigest())
        observation = Observation(
            phase=spec.phase,
            exit_code=159 if outcome.seccomp_killed else outcome.exit_code,
            signal=31 if outcome.seccomp_killed else None,
            oom_killed=outcome.oom_killed,
            timed_out=outcome.timed_out,
            seccomp_killed=outcome.seccomp_killed,
            pids_limit_hit=outcome.pids_limit_hit,
            wall_time_ms=1.0,
            stdout=summary,
            stderr=StreamSummary(size=0, sha256=hashlib.sha256(b"").hexdigest()),
            image_id=spec.image,
            audit_source=self.source,
            incomplete=outcome.incomplete,
            uid=spec.uid,
        )
        if outcome.killed_outside:
            raise KilledFromOutsideError("fake: killed from outside", observation)
        return RunResult(observation, outcome.stdout, b"")

    def remove_owned(self, keep: frozenset[str] = frozenset()) -> list[str]:
        return []

    def image_id(self, image: str) -> str:
        self.resolved.append(image)
        return self.images(image)

    def ping(self) -> None:
        return None

    def audit_source(self) -> AuditSource:
        return self.source


@dataclass
class FakeSandbox:
    """A fake started sandbox: its behaviour runs (and sees the workspace) at ``run``."""

    runtime: FakeRuntime
    spec: RunSpec
    done: bool = False

    def run(self) -> RunResult:
        if self.done:
            raise RuntimeUnavailableError("a sandbox runs once")
        self.done = True
        return self.runtime.run(self.spec)

    def discard(self) -> None:
        if not self.done:
            self.done = True
            self.runtime.discarded.append(self.spec)
