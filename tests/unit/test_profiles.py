"""Profiles load only when their seccomp policy compiles, denies by default and is sane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict, cast

import pytest
import yaml

from controller.errors import ProfileError
from controller.profiles.load import load_profile, load_profiles
from controller.settings import SHIPPED_ROOT

PROFILES = SHIPPED_ROOT / "profiles"


class SyscallRule(TypedDict):
    names: list[str]
    action: str


def _rules(seccomp: dict[str, object]) -> list[SyscallRule]:
    """The syscall rules of a seccomp policy (JSON: the profile keeps it as a document)."""
    return cast(list[SyscallRule], seccomp["syscalls"])


def test_shipped_profiles_load_with_tripwires_merged() -> None:
    profiles = load_profiles(PROFILES)
    assert set(profiles) == {"standard", "strict"}
    for profile in profiles.values():
        assert profile.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
        assert profile.seccomp["architectures"] == ["SCMP_ARCH_X86_64"]
        kills = {name for rule in _rules(profile.seccomp)
                 if rule["action"] == "SCMP_ACT_KILL_PROCESS" for name in rule["names"]}
        assert {"ptrace", "mount", "unshare", "bpf", "keyctl", "setns"} <= kills
        allowed = {name for rule in _rules(profile.seccomp)
                   if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}
        assert not allowed & {"io_uring_setup", "perf_event_open", "userfaultfd", "ptrace"}
        assert profile.digest.startswith("sha256:")
    assert profiles["strict"].limits.memory_bytes < profiles["standard"].limits.memory_bytes


def _variant(tmp_path: Path, *, seccomp_edit: object = None, **changes: object) -> Path:
    raw = yaml.safe_load((PROFILES / "standard.yaml").read_text())
    seccomp = json.loads((PROFILES / "seccomp" / "standard.json").read_text())
    if callable(seccomp_edit):
        seccomp_edit(seccomp)
    (tmp_path / "s.json").write_text(json.dumps(seccomp))
    raw.update({"seccomp": "s.json", **changes})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_syscall_is_refused_naming_it(tmp_path: Path) -> None:
    path = _variant(tmp_path, seccomp_edit=lambda s: s["syscalls"][0]["names"].append("nosuch"))
    with pytest.raises(ProfileError, match="nosuch"):
        load_profile(path)


def test_allowing_default_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, seccomp_edit=lambda s: s.update(defaultAction="SCMP_ACT_ALLOW"))
    with pytest.raises(ProfileError, match="must deny"):
        load_profile(path)


def test_tripwire_that_is_also_allowed_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, tripwires=["read"])
    with pytest.raises(ProfileError, match="also allowed"):
        load_profile(path)


def test_bad_limit_names_the_field(tmp_path: Path) -> None:
    raw_limits = yaml.safe_load((PROFILES / "standard.yaml").read_text())["limits"]
    path = _variant(tmp_path, limits={**raw_limits, "pids": 0})
    with pytest.raises(ProfileError, match="limits: pids"):
        load_profile(path)


def test_a_tolerance_for_a_total_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = _variant(tmp_path, divergence_tolerances={"cpu_time_ns": 2.0, "cpu_seconds": 1.0})
    with pytest.raises(ProfileError, match="no such total: cpu_seconds"):
        load_profile(path)
    (tmp_path / "ok").mkdir()
    loaded = load_profile(_variant(tmp_path / "ok", divergence_tolerances={"cpu_time_ns": 2.0}))
    assert loaded.tolerances["cpu_time_ns"] == 2.0 and loaded.tolerances["peak_pids"] == 0.5


def test_digest_changes_with_the_seccomp_policy(tmp_path: Path) -> None:
    same = load_profile(_variant(tmp_path))
    (tmp_path / "twin").mkdir()
    (tmp_path / "other").mkdir()
    assert load_profile(_variant(tmp_path / "twin")).digest == same.digest
    edited = load_profile(_variant(tmp_path / "other", seccomp_edit=lambda s: s["syscalls"][0]
                                   ["names"].remove("inotify_init")))
    assert edited.digest != same.digest


def _rules_naming(seccomp: dict[str, object], name: str) -> list[str]:
    return [str(rule["action"]) for rule in _rules(seccomp)
            if name in rule["names"]]


def test_tripwires_are_taken_out_of_every_other_rule() -> None:
    # strict.json denies chroot and personality with ERRNO; strict.yaml makes them tripwires.
    # libseccomp keeps a syscall's first rule, so the ERRNO rule would disarm the tripwire.
    strict = load_profiles(PROFILES)["strict"]
    for name in ("chroot", "personality", "ptrace"):
        assert _rules_naming(strict.seccomp, name) == ["SCMP_ACT_KILL_PROCESS"], name


def test_a_rule_left_with_no_names_is_dropped(tmp_path: Path) -> None:
    def add_errno_rule(seccomp: dict[str, list[dict[str, object]]]) -> None:
        seccomp["syscalls"].insert(0, {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO"})

    profile = load_profile(_variant(tmp_path, seccomp_edit=add_errno_rule))
    assert _rules_naming(profile.seccomp, "ptrace") == ["SCMP_ACT_KILL_PROCESS"]
    assert all(rule["names"] for rule in _rules(profile.seccomp))
