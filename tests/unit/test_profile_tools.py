"""Profile tooling without Docker: lint findings, learning's profile transformations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.profiles.learn import ALWAYS_KEPT, allowed_names, logging_variant, proposal
from controller.profiles.lint import lint_profile
from controller.profiles.load import load_profile
from controller.settings import SHIPPED_ROOT

PROFILES = SHIPPED_ROOT / "profiles"


def variant(tmp_path: Path, edit: object) -> Path:
    seccomp = json.loads((PROFILES / "seccomp" / "standard.json").read_text())
    assert callable(edit)
    edit(seccomp)
    (tmp_path / "s.json").write_text(json.dumps(seccomp))
    raw = yaml.safe_load((PROFILES / "standard.yaml").read_text())
    raw["seccomp"] = "s.json"
    raw["tripwires"] = [t for t in raw["tripwires"] if t not in ("ptrace", "mount", "bpf")]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "p.yaml"


def test_shipped_profiles_lint_clean() -> None:
    for path in PROFILES.glob("*.yaml"):
        assert [f for f in lint_profile(path) if f.level == "error"] == []


@pytest.mark.parametrize("name", ["ptrace", "mount", "bpf", "io_uring_setup"])
def test_lint_rejects_dangerous_allows_with_a_reason(tmp_path: Path, name: str) -> None:
    path = variant(tmp_path, lambda s: s["syscalls"][0]["names"].append(name))
    errors = [f for f in lint_profile(path) if f.level == "error"]
    assert any(f"allows {name}:" in f.message for f in errors), errors


def test_lint_rejects_unfiltered_clone_and_32_bit_abis(tmp_path: Path) -> None:
    def edit(seccomp: dict[str, Any]) -> None:  # a seccomp policy as JSON
        seccomp["syscalls"][0]["names"].append("clone")
        seccomp["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]

    messages = [f.message for f in lint_profile(variant(tmp_path, edit))]
    assert any("clone for any argument" in m for m in messages)
    assert any("SCMP_ARCH_X86:" in m for m in messages)


def test_lint_warns_when_the_tmpfs_mounts_outgrow_memory(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda s: None)
    raw = yaml.safe_load(path.read_text())
    raw["limits"]["workspace_bytes"] = raw["limits"]["memory_bytes"]
    path.write_text(yaml.safe_dump(raw))
    warnings = [f.message for f in lint_profile(path) if f.level == "warning"]
    assert any("workspace_bytes + 2 * tmpfs_bytes exceed memory_bytes" in m for m in warnings)


def test_lint_cli_exit_code(tmp_path: Path) -> None:
    tool = str(Path(sys.executable).parent / "sandgate")
    bad = variant(tmp_path, lambda s: s["syscalls"][0]["names"].append("mount"))
    assert subprocess.run([tool, "profiles", "lint", str(bad)], capture_output=True,
                          check=False).returncode == 1
    assert subprocess.run([tool, "profiles", "lint"], capture_output=True,
                          check=False).returncode == 0


def test_logging_variant_logs_only_what_is_new_and_proposal_keeps_filters() -> None:
    ceiling = load_profile(PROFILES / "standard.yaml").seccomp
    seen = {"read", "write", "clone", "socket"}
    logging = logging_variant(ceiling, seen)
    logged = {n for r in logging["syscalls"] if r["action"] == "SCMP_ACT_LOG" for n in r["names"]}
    assert "read" not in logged and "openat" in logged
    assert allowed_names(logging) >= seen
    narrowed = proposal(ceiling, seen)
    # What a signal needs is kept even when no signal arrived while learning.
    assert allowed_names(narrowed) == seen | ALWAYS_KEPT
    clone = next(r for r in narrowed["syscalls"] if r["names"] == ["clone"])
    assert clone["args"], "the namespace-flag filter must survive learning"
    kills = [r for r in narrowed["syscalls"] if r["action"] == "SCMP_ACT_KILL_PROCESS"]
    assert kills and "ptrace" in kills[0]["names"]


def test_profiles_reload_swaps_all_or_nothing(tmp_path: Path) -> None:
    import shutil

    from controller.adapters.runtime.fake import FakeRuntime
    from controller.errors import ProfileError
    from tests.conftest import make_controller

    live = tmp_path / "profiles"
    shutil.copytree(PROFILES, live)
    controller = make_controller(tmp_path / "data", FakeRuntime(), profiles_dir=live)
    before = controller.profiles["strict"].digest
    text = (live / "strict.yaml").read_text()
    (live / "strict.yaml").write_text(text.replace("pids: 32", "pids: 0"))
    with pytest.raises(ProfileError, match="pids"):
        controller.reload_profiles(live)
    assert controller.profiles["strict"].digest == before
    (live / "strict.yaml").write_text(text.replace("pids: 32", "pids: 24"))
    controller.reload_profiles(live)
    assert controller.profiles["strict"].limits.pids == 24
    assert controller.profiles["strict"].digest != before
