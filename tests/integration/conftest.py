"""Integration fixtures: a controller on the real Docker engine, with a spy on its runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.store.submissions import Store
from controller.core.models import AuditSource, Phase
from controller.core.ports import RunResult, RunSpec, Sandbox, SandboxRuntime
from controller.service.controller import Controller
from tests.conftest import ROOT, make_controller

# What ``make_controller`` builds: the SQLite store and the shadowed Cedar engine.
LocalController = Controller[Store, ShadowedEngine]


@dataclass
class Spy:
    """Records every container run the controller asks for, then does it for real (a
    sandbox started and never run is no run)."""

    inner: SandboxRuntime
    phases: list[Phase] = field(default_factory=list)

    def start(self, spec: RunSpec) -> Sandbox:
        return SpiedSandbox(self, spec, self.inner.start(spec))

    def run(self, spec: RunSpec) -> RunResult:
        self.phases.append(spec.phase)
        return self.inner.run(spec)

    def remove_owned(self, keep: frozenset[str] = frozenset()) -> list[str]:
        return self.inner.remove_owned(keep)

    def image_id(self, image: str) -> str:
        return self.inner.image_id(image)

    def ping(self) -> None:
        self.inner.ping()

    def audit_source(self) -> AuditSource:
        return self.inner.audit_source()


@dataclass
class SpiedSandbox:
    spy: Spy
    spec: RunSpec
    inner: Sandbox

    def run(self) -> RunResult:
        self.spy.phases.append(self.spec.phase)
        return self.inner.run()

    def discard(self) -> None:
        self.inner.discard()


@pytest.fixture(scope="session")
def quick_profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped profiles with a 3 s wall-time limit, so time-outs test quickly."""
    directory = tmp_path_factory.mktemp("profiles")
    for source in (ROOT / "profiles").glob("*.yaml"):
        raw = yaml.safe_load(source.read_text())
        raw["seccomp"] = str((source.parent / raw["seccomp"]).resolve())
        raw["limits"]["wall_time_s"] = 3
        (directory / source.name).write_text(yaml.safe_dump(raw))
    return directory


@pytest.fixture
def spy(docker_runtime: SandboxRuntime) -> Spy:
    return Spy(docker_runtime)


@pytest.fixture
def controller(tmp_path: Path, spy: Spy, quick_profiles: Path) -> LocalController:
    return make_controller(tmp_path / "data", spy, profiles_dir=quick_profiles)
