"""Loading profiles: a YAML of limits plus a Docker/OCI seccomp JSON, proven by pyseccomp.

A profile is refused at load, naming the file and field, when its YAML does not match the
schema, its seccomp policy does not deny by default, a syscall name does not resolve on this
architecture, or a tripwire is also allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyseccomp
import yaml
from pydantic import ValidationError

from controller.core.profile import Limits, Profile
from controller.errors import ProfileError

DENYING_DEFAULTS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"})
TRIPWIRE_ACTION = "SCMP_ACT_KILL_PROCESS"
PR_SET_SECCOMP = 22


def _prctl_without_seccomp() -> list[dict[str, Any]]:
    """prctl allowed for every option but PR_SET_SECCOMP.

    A filter the sandbox installs itself could return SECCOMP_RET_LOG for a harmless syscall
    and flood the kernel's audit records, to bury a child's tripwire kill among them. The
    kernel reads the option as a 32-bit int while a filter sees 64 bits (``22 | 1 << 32`` is
    PR_SET_SECCOMP to the kernel and not 22 to ``SCMP_CMP_NE``), and a second, denying rule
    for the same syscall is not reliably kept beside an allow. So: one allow per bit of the
    low 32 in which the option differs from 22 — together exactly "the int is not 22"; 22
    meets the default action (denied).
    """
    return [{"names": ["prctl"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1 << bit,
                       "valueTwo": 0 if PR_SET_SECCOMP & (1 << bit) else 1 << bit,
                       "op": "SCMP_CMP_MASKED_EQ"}],
             "comment": f"prctl with bit {bit} of the option unlike PR_SET_SECCOMP's"}
            for bit in range(32)]
_ACTIONS = {
    "SCMP_ACT_ALLOW": pyseccomp.ALLOW,
    "SCMP_ACT_ERRNO": pyseccomp.ERRNO(1),
    "SCMP_ACT_KILL": pyseccomp.KILL,
    "SCMP_ACT_KILL_THREAD": pyseccomp.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": pyseccomp.KILL_PROCESS,
    "SCMP_ACT_LOG": pyseccomp.LOG,
}
_OPS = {
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}


def load_profile(path: Path) -> Profile:
    """Load and prove one profile YAML (and the seccomp file it names)."""
    raw = _read_yaml(path)
    seccomp_path = (path.parent / str(raw.get("seccomp", ""))).resolve()
    try:
        limits = Limits.model_validate(raw.get("limits", {}))
    except ValidationError as exc:
        raise ProfileError(f"{path}: limits: {_first_error(exc)}") from exc
    tripwires = tuple(str(name) for name in raw.get("tripwires", []))
    seccomp = _effective_seccomp(seccomp_path, tripwires, source=path)
    compile_seccomp(seccomp, source=seccomp_path)
    body = {key: raw.get(key) for key in sorted(raw)}
    digest = hashlib.sha256(
        json.dumps({"profile": body, "seccomp": seccomp}, sort_keys=True).encode()
    ).hexdigest()
    try:
        return Profile(
            name=str(raw.get("name", path.stem)),
            description=str(raw.get("description", "")),
            image=str(raw["image"]),
            seccomp_file=str(raw["seccomp"]),
            limits=limits,
            network=bool(raw.get("network", False)),
            accept_unaudited=raw.get("accept_unaudited", False),
            divergence_tolerance=raw.get("divergence_tolerance", 0.5),
            divergence_tolerances=raw.get("divergence_tolerances") or {},
            pool=raw.get("pool") or {},
            tripwires=tripwires,
            seccomp=seccomp,
            digest=f"sha256:{digest}",
        )
    except (KeyError, ValidationError) as exc:
        raise ProfileError(f"{path}: missing or invalid field: {exc}") from exc


def archive_profile(profile: Profile, archive: Path) -> Path:
    """Keep the profile as loaded (limits, image and effective seccomp) under its digest, so
    the digest any receipt cites resolves to what the runs had."""
    target = archive / f"{profile.digest.removeprefix('sha256:')}.json"
    if target.exists():
        return target
    archive.mkdir(parents=True, exist_ok=True)
    staging = archive / f".{target.name}.tmp"
    staging.write_text(profile.model_dump_json(indent=2))
    os.replace(staging, target)
    return target


def load_profiles(directory: Path) -> dict[str, Profile]:
    """Every ``*.yaml`` in ``directory``, by name; refuses the lot if any one is broken."""
    profiles = {}
    for path in sorted(directory.glob("*.yaml")):
        profile = load_profile(path)
        if profile.name in profiles:
            raise ProfileError(f"{path}: profile name {profile.name!r} is defined twice")
        profiles[profile.name] = profile
    if not profiles:
        raise ProfileError(f"{directory}: no profile (*.yaml) found")
    return profiles


def compile_seccomp(seccomp: dict[str, Any], *, source: Path) -> None:
    """Build the filter with libseccomp: every name must resolve, every action be known."""
    default = str(seccomp.get("defaultAction"))
    if default not in DENYING_DEFAULTS:
        raise ProfileError(f"{source}: defaultAction {default!r} must deny (one of "
                           f"{sorted(DENYING_DEFAULTS)})")
    default_action = _rule_action(
        {"action": default, "errnoRet": seccomp.get("defaultErrnoRet", 1)}, source, -1
    )
    seccomp_filter = pyseccomp.SyscallFilter(default_action)
    for index, rule in enumerate(seccomp.get("syscalls", [])):
        action = _rule_action(rule, source, index)
        args = [_rule_arg(arg, source, index) for arg in rule.get("args") or []]
        for name in rule.get("names", []):
            try:
                pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)
                # libseccomp refuses a rule equal to the default; runc skips those too.
                if action != default_action:
                    seccomp_filter.add_rule(action, name, *args)
            except (OSError, ValueError) as exc:
                raise ProfileError(
                    f"{source}: syscalls[{index}]: {name!r} does not resolve or cannot be "
                    f"filtered on this architecture ({exc})"
                ) from exc


def _rule_action(rule: dict[str, Any], source: Path, index: int) -> int:
    name = str(rule.get("action"))
    if name == "SCMP_ACT_ERRNO":
        return int(pyseccomp.ERRNO(int(rule.get("errnoRet", 1))))
    if name not in _ACTIONS:
        raise ProfileError(f"{source}: syscalls[{index}]: unknown action {name!r}")
    return int(_ACTIONS[name])


def _rule_arg(arg: dict[str, Any], source: Path, index: int) -> Any:
    op = str(arg.get("op"))
    if op not in _OPS:
        raise ProfileError(f"{source}: syscalls[{index}]: unknown comparison {op!r}")
    return pyseccomp.Arg(int(arg["index"]), _OPS[op], int(arg["value"]),
                         int(arg.get("valueTwo", 0)))


def _effective_seccomp(path: Path, tripwires: tuple[str, ...], *, source: Path) -> dict[str, Any]:
    try:
        seccomp: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{source}: seccomp file {path}: {exc}") from exc
    allowed = {
        name
        for rule in seccomp.get("syscalls", [])
        if rule.get("action") == "SCMP_ACT_ALLOW"
        for name in rule.get("names", [])
    }
    clash = sorted(allowed.intersection(tripwires))
    if clash:
        raise ProfileError(f"{source}: tripwires {clash} are also allowed in {path}")
    seccomp = dict(seccomp)
    rules = _without(seccomp.get("syscalls", []), frozenset(tripwires))
    if "seccomp" in allowed:
        raise ProfileError(f"{source}: {path} allows seccomp: the sandbox could install a "
                           "filter of its own that floods the audit records and buries a "
                           "tripwire kill; remove it from the allowed syscalls")
    if "prctl" in allowed:
        rules = [*_without(rules, frozenset({"prctl"})), *_prctl_without_seccomp()]
    if tripwires:
        rules.append({"names": sorted(tripwires), "action": TRIPWIRE_ACTION,
                      "comment": "tripwires: a call kills the process and flags the sandbox"})
    seccomp["syscalls"] = rules
    return seccomp


def _without(rules: list[dict[str, Any]], names: frozenset[str]) -> list[dict[str, Any]]:
    """The rules with ``names`` taken out (and rules left with no name dropped).

    A tripwire must be only a tripwire: where a syscall has two rules, libseccomp keeps the
    first, so an ERRNO rule for it in the JSON would silently disarm the tripwire.
    """
    kept = []
    for rule in rules:
        remaining = [name for name in rule.get("names", []) if name not in names]
        if remaining:
            kept.append({**rule, "names": remaining})
    return kept


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping")
    return raw


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
