"""Shared fixtures. Docker tests are marked ``docker``; they skip on a laptop without an
engine, and fail (never skip) under CI=true."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from controller.adapters.fs.tmpfs import PlainDirectories, ScratchMounts
from controller.adapters.fs.workspaces import Workspaces
from controller.adapters.policy.cedar import CedarEngine
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.core.models import SubmissionRequest
from controller.core.ports import OWNER_LABEL, SandboxRuntime, Tmpfs
from controller.profiles.load import load_profiles
from controller.service.controller import Controller
from controller.service.means import Paths, Rules
from controller.settings import SHIPPED_ROOT

# No per-example deadline: these machines are shared, and a slow example is not a wrong one.
settings.register_profile("sandgate", deadline=None)
settings.load_profile("sandgate")

ROOT = SHIPPED_ROOT
TEST_OWNER = "sandgate"


def make_controller(data: Path, runtime: SandboxRuntime, *, profiles_dir: Path | None = None,
                    policy_dir: Path | None = None, shadow_dir: Path | None = None,
                    max_deleted_files: int = 20, max_parked: int = 16,
                    tmpfs: Tmpfs | None = None) -> Controller[Store, ShadowedEngine]:
    """A controller on ``data`` with the shipped profiles and default bundle; its scratch
    filesystems are plain directories under the fake runtime, real tmpfs mounts under
    Docker (unless ``tmpfs`` says)."""
    if tmpfs is None:
        tmpfs = PlainDirectories() if isinstance(runtime, FakeRuntime) else ScratchMounts()
    active = CedarEngine.from_path(policy_dir or ROOT / "policies" / "default")
    shadow = CedarEngine.from_path(shadow_dir) if shadow_dir else None
    return Controller(
        store=Store(data / "sandgate.db"),
        runtime=runtime,
        engine=ShadowedEngine(active, shadow),
        signer=KeyRing(data / "keys").signer(),
        profiles=load_profiles(profiles_dir or ROOT / "profiles"),
        workspaces=Workspaces(data / "workspaces"),
        tmpfs=tmpfs,
        paths=Paths(runs=data / "runs", quarantine=data / "quarantine", data=data),
        rules=Rules(max_deleted_files=max_deleted_files, max_parked=max_parked),
    )


def bundle_with(tmp_path: Path, name: str, extra: str) -> Path:
    """A copy of the default bundle with one more policy file holding ``extra``."""
    root = tmp_path / name
    shutil.copytree(ROOT / "policies" / "default", root)
    (root / "policies" / "extra.cedar").write_text(extra)
    return root


def parking_rule(created_over: int) -> str:
    """A Cedar rule that parks (run_unattended forbidden) a submission whose dry run created
    more than ``created_over`` files."""
    return f"""
@id("run_unattended.many-new-files")
@reason("the dry run created more than {created_over} files: a human looks first")
forbid (principal, action == Action::"run_unattended", resource)
when {{ context.dry_run_diff.created > {created_over} }};
"""


def owned_containers(owner: str) -> list[str]:
    """Ids of every container (any state) labelled with ``owner``."""
    import docker

    client = docker.from_env()
    try:
        return [c.id for c in client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={owner}"})]
    finally:
        client.close()


def python(code: str, **kwargs: object) -> SubmissionRequest:
    return SubmissionRequest.model_validate({"language": "python", "code": code, **kwargs})


def _docker_ready() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        # A plain connect first: the SDK leaks its socket when the engine is not there.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError as exc:
                return f"Docker engine unavailable at {host}: {exc}"
    try:
        from controller.adapters.runtime.docker import DockerRuntime

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


DOCKERD_PIDFILE = ROOT / ".sandgate" / "dockerd.pid"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unrunnable(marker: str, problem: str | None, items: list[pytest.Item]) -> None:
    """Tests that cannot run here skip on a laptop, and stop the session under CI=true."""
    if problem is None:
        return
    if _in_ci():
        raise pytest.UsageError(f"CI=true and {marker} tests cannot run: {problem}")
    for item in items:
        if item.get_closest_marker(marker):
            item.add_marker(pytest.mark.skip(reason=problem))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("docker") for item in items):
        _unrunnable("docker", _docker_ready(), items)
    if any(item.get_closest_marker("restarts_docker") for item in items):
        # Only a dockerd our own set-up started (its pid on file) may be stopped by a test.
        _unrunnable("restarts_docker", None if DOCKERD_PIDFILE.exists() else
                    f"{DOCKERD_PIDFILE} is missing: this dockerd was not started by "
                    "scripts/docker-up.sh", items)


@pytest.fixture(scope="session")
def docker_runtime() -> Iterator[SandboxRuntime]:
    """The real runtime; at the end of the session no labelled container may remain."""
    from controller.adapters.runtime.docker import DockerRuntime

    runtime = DockerRuntime(owner=TEST_OWNER)
    yield runtime
    assert runtime.settle(), "the removals of ended runs did not finish"
    leftover = runtime.client.containers.list(
        all=True, filters={"label": f"{OWNER_LABEL}={TEST_OWNER}"})
    runtime.client.close()
    assert not leftover, f"containers left behind: {[c.short_id for c in leftover]}"
