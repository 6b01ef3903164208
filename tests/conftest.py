"""Shared fixtures. Docker tests are marked ``docker``; they skip on a laptop without an
engine, and fail (never skip) under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.models import SubmissionRequest
from controller.policy.cedar import CedarEngine
from controller.policy.shadow import ShadowedEngine
from controller.ports import OWNER_LABEL, SandboxRuntime
from controller.profiles import load_profiles
from controller.service import Controller, Paths
from controller.settings import SHIPPED_ROOT
from controller.signing import KeyRing
from controller.store import Store
from controller.workspace import Workspaces

ROOT = SHIPPED_ROOT
TEST_OWNER = "sandgate"


def make_controller(data: Path, runtime: SandboxRuntime, *, profiles_dir: Path | None = None,
                    policy_dir: Path | None = None, shadow_dir: Path | None = None,
                    max_deleted_files: int = 20) -> Controller:
    """A controller on ``data`` with the shipped profiles and default bundle."""
    active = CedarEngine.from_path(policy_dir or ROOT / "policies" / "default")
    shadow = CedarEngine.from_path(shadow_dir) if shadow_dir else None
    return Controller(
        store=Store(data / "sandgate.db"),
        runtime=runtime,
        engine=ShadowedEngine(active, shadow),
        signer=KeyRing(data / "keys").signer(),
        profiles=load_profiles(profiles_dir or ROOT / "profiles"),
        workspaces=Workspaces(data / "workspaces"),
        paths=Paths(runs=data / "runs", quarantine=data / "quarantine"),
        max_deleted_files=max_deleted_files,
    )


def python(code: str, **kwargs: object) -> SubmissionRequest:
    return SubmissionRequest.model_validate({"language": "python", "code": code, **kwargs})


def _docker_ready() -> str | None:
    try:
        from controller.runtime.docker import DockerRuntime

        runtime = DockerRuntime()
        try:
            runtime.ping()
            if not runtime.has_image("sandgate/python:latest"):
                return "sandbox image sandgate/python:latest missing (sandgate images build)"
        finally:
            runtime.client.close()
    except Exception as exc:
        return f"Docker engine unavailable: {exc}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("docker") for item in items):
        return
    problem = _docker_ready()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise pytest.UsageError(f"CI=true and Docker tests cannot run: {problem}")
    skip = pytest.mark.skip(reason=problem)
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[SandboxRuntime]:
    """The real runtime; at the end of the session no labelled container may remain."""
    from controller.runtime.docker import DockerRuntime

    runtime = DockerRuntime(owner=TEST_OWNER)
    yield runtime
    leftover = runtime.client.containers.list(
        all=True, filters={"label": f"{OWNER_LABEL}={TEST_OWNER}"})
    runtime.client.close()
    assert not leftover, f"containers left behind: {[c.short_id for c in leftover]}"
