"""Learning the syscalls a workload needs: ``sandgate profiles learn -- FILE``.

The workload runs in the sandbox (same image, limits, no network) under a *logging* variant
of a ceiling profile: every syscall the ceiling allows is allowed and logged
(``SCMP_ACT_LOG``), everything else is denied, tripwires still kill. The kernel emits one
audit record per logged call; we read them from the audit netlink multicast group (no rate
limit), or from ``/dev/kmsg`` where that group is closed to us. Runs repeat with
the syscalls already seen switched to plain allow, so each run logs only what is new, until
a run reveals nothing new. The proposal keeps the ceiling's rules (and argument filters)
for exactly the syscalls seen.

What it can miss, by construction: code paths the workload did not take on this input;
records the kernel dropped (a round that shows a drop — a full socket, or ``/dev/kmsg``'s
print rate limit of about 10 records per 5 s — never settles the learning, so the runs go on);
and calls made by other sandboxes at the same moment are counted too (they can only add
syscalls). On the ``/dev/kmsg`` path learning floods the kernel log, so do it on a machine
that is not serving.
"""

from __future__ import annotations

import copy
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyseccomp

from controller.adapters.fs.trees import hand_to_sandbox
from controller.adapters.runtime.kmsg import AuditLog, open_audit_log, parse_logged
from controller.core.models import Language, Phase
from controller.core.ports import COMMANDS, SANDBOX_UID, RunSpec, SandboxRuntime
from controller.core.profile import Profile
from controller.errors import ProfileError

MAX_ROUNDS = 12


@dataclass(frozen=True)
class Learned:
    syscalls: frozenset[str]
    rounds: int
    exit_codes: tuple[int | None, ...]
    seccomp: dict[str, Any]  # the proposal: the ceiling's rules for the syscalls seen


def allowed_names(seccomp: dict[str, Any]) -> set[str]:
    return {name for rule in seccomp.get("syscalls", [])
            if rule.get("action") == "SCMP_ACT_ALLOW" for name in rule.get("names", [])}


def _split_allows(ceiling: dict[str, Any], seen: set[str],
                  unseen_action: str | None) -> dict[str, Any]:
    """The ceiling with each allow rule split by ``seen``: seen names stay allowed (argument
    filters kept), unseen ones get ``unseen_action`` or are dropped when it is None."""
    result = copy.deepcopy(ceiling)
    rules = []
    for rule in result.get("syscalls", []):
        if rule.get("action") != "SCMP_ACT_ALLOW":
            rules.append(rule)
            continue
        known = [name for name in rule["names"] if name in seen]
        new = [name for name in rule["names"] if name not in seen]
        if known:
            rules.append({**rule, "names": known})
        if new and unseen_action is not None:
            rules.append({**rule, "names": new, "action": unseen_action})
    result["syscalls"] = rules
    return result


def logging_variant(ceiling: dict[str, Any], seen: set[str]) -> dict[str, Any]:
    """The ceiling with every allow not yet seen turned into allow-and-log."""
    return _split_allows(ceiling, seen, "SCMP_ACT_LOG")


# Kept whether seen or not: a run sees them only when a signal happens to arrive (a handler
# returns through rt_sigreturn; an interrupted call resumes through restart_syscall), and a
# process denied them crashes (SIGSEGV) instead of failing a call. Learning saw rt_sigreturn
# in about half of the runs of a workload with no signal handling of its own.
ALWAYS_KEPT = frozenset({"rt_sigreturn", "restart_syscall", "exit", "exit_group"})


def proposal(ceiling: dict[str, Any], seen: set[str]) -> dict[str, Any]:
    """The ceiling narrowed to the syscalls seen, plus ``ALWAYS_KEPT`` (argument filters
    kept as they are)."""
    narrowed = _split_allows(ceiling, seen | ALWAYS_KEPT, None)
    narrowed["comment"] = "Learned by `sandgate profiles learn`: the ceiling's allows that " \
                          "the workload used."
    return narrowed


def learn(runtime: SandboxRuntime, ceiling: Profile, code: str, language: Language,
          *, image_id: str) -> Learned:
    """Run the workload until no new syscall shows up; see the module docstring."""
    seen: set[str] = set()
    exits: list[int | None] = []
    with tempfile.TemporaryDirectory(prefix="sandgate-learn-") as tmp:
        for round_number in range(1, MAX_ROUNDS + 1):
            variant = ceiling.model_copy(update={
                "seccomp": logging_variant(ceiling.seccomp, seen)})
            new, exit_code, lost = _one_run(runtime, variant, code, language, image_id,
                                            Path(tmp) / str(round_number))
            exits.append(exit_code)
            # Settled only by a round that lost no record and showed nothing new: a syscall
            # the workload always makes and that is still unseen would be logged in it.
            if not lost and not new - seen:
                return Learned(frozenset(seen), round_number, tuple(exits),
                               proposal(ceiling.seccomp, seen))
            seen |= new
    raise ProfileError(f"learning did not settle in {MAX_ROUNDS} runs: the workload uses "
                       "different syscalls every time; learn from a more stable input")


def _one_run(runtime: SandboxRuntime, profile: Profile, code: str, language: Language,
             image_id: str, scratch: Path) -> tuple[set[str], int | None, bool]:
    workspace, code_dir = scratch / "workspace", scratch / "code"
    workspace.mkdir(parents=True)
    code_dir.mkdir(mode=0o755)
    name, command = COMMANDS[language]
    (code_dir / name).write_text(code)
    (code_dir / name).chmod(0o644)
    hand_to_sandbox(workspace)
    watch = open_audit_log()
    if watch is None:
        raise ProfileError("cannot read the kernel's audit records (learning needs root)")
    numbers: set[int] = set()
    done = threading.Event()

    def drain() -> None:
        # Read while the workload runs: the first rounds log far more than the ring holds.
        while not done.wait(0.005):
            numbers.update(_logged(watch))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        result = runtime.run(RunSpec(submission_id=f"learn-{scratch.name}", phase=Phase.DRY_RUN,
                                     profile=profile, command=command, workspace_dir=workspace,
                                     code_dir=code_dir, image=image_id))
    finally:
        done.set()
        reader.join()
        numbers.update(_logged(watch))
        watch.close()
    arch = pyseccomp.system_arch()
    names = {pyseccomp.resolve_syscall(arch, nr).decode() for nr in numbers}
    return names, result.observation.exit_code, watch.lost


# How the kernel says it dropped audit records: a full backlog, or printk's rate limit.
DROPPED = ("audit_backlog=", "audit_lost=", "callbacks suppressed")


def _logged(watch: AuditLog) -> set[int]:
    records = list(watch.records())
    if any(marker in record for record in records for marker in DROPPED):
        watch.lost = True  # some record may be gone: this round cannot settle the learning
    return {nr for record in records if (nr := parse_logged(record, SANDBOX_UID)) is not None}
