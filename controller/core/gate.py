"""The policy gates: what each decision is asked with, and how an answer maps to an outcome.

Pure. The engine behind ``PolicyEngine`` may change; the contexts and the mapping stay.
"""

from __future__ import annotations

from typing import Any

from controller.core.models import (
    Decision,
    DiffSummary,
    Gate,
    Observation,
    Outcome,
    RuleMatch,
    SubmissionRequest,
)
from controller.core.profile import Profile
from controller.core.radius import Divergence


def to_outcome(allowed: bool | None, errors: tuple[str, ...]) -> Outcome:
    """Fail closed: no answer, or any evaluation error, is SILENCE (denied by the lifecycle).

    An error must never let a permit through because the forbid beside it failed to evaluate.
    """
    if allowed is None or errors:
        return Outcome.SILENCE
    return Outcome.PERMIT if allowed else Outcome.DENY


def silence(gate: Gate, error: str) -> Decision:
    return Decision(gate=gate, outcome=Outcome.SILENCE, errors=(error,))


def run_summary(observation: Observation) -> dict[str, Any]:
    return {
        "exit_code": -1 if observation.exit_code is None else observation.exit_code,
        "signal": observation.signal or 0,
        "timed_out": observation.timed_out,
        "oom_killed": observation.oom_killed,
        "pids_limit_hit": observation.pids_limit_hit,
        "output_truncated": observation.stdout.truncated or observation.stderr.truncated,
        "seccomp_killed": observation.seccomp_killed,
        "wall_time_ms": int(observation.wall_time_ms),
    }


def admission_context(request: SubmissionRequest, profile: Profile, *,
                      max_deleted_files: int) -> dict[str, Any]:
    """Context of the ``submit`` decision, taken before anything runs."""
    return {
        "request": {
            "language": request.language.value,
            "code_bytes": len(request.code.encode()),
            "files": len(request.files),
        },
        "profile": {
            "name": profile.name,
            "network": profile.network,
            "memory_bytes": profile.limits.memory_bytes,
            "pids": profile.limits.pids,
            "wall_time_s": int(profile.limits.wall_time_s),
            "workspace_bytes": profile.limits.workspace_bytes,
        },
        "config": {"max_deleted_files": max_deleted_files},
    }


def assessment_context(
    request: SubmissionRequest,
    profile: Profile,
    dry_run: Observation,
    dry_run_diff: DiffSummary,
    *,
    max_deleted_files: int,
) -> dict[str, Any]:
    """Context of the ``run`` and ``run_unattended`` decisions, taken after the dry run."""
    return {**admission_context(request, profile, max_deleted_files=max_deleted_files),
            "dry_run": run_summary(dry_run), "dry_run_diff": dry_run_diff.counts()}


def unattended(decision: Decision) -> Decision:
    """``run_unattended`` refused means a human must approve: REQUIRE_APPROVAL, not DENY.

    SILENCE stays SILENCE (fail closed: an engine error never parks, it denies).
    """
    if decision.outcome is Outcome.DENY:
        return decision.model_copy(update={"outcome": Outcome.REQUIRE_APPROVAL})
    return decision


def validation_context(
    assessment: dict[str, Any], bounded_run: Observation, diff: DiffSummary,
    divergence: Divergence,
) -> dict[str, Any]:
    """Context of the ``commit`` decision: the assessment's, plus the real run's effects and
    how far they went beyond the dry run's."""
    return {**assessment, "bounded_run": run_summary(bounded_run), "diff": diff.counts(),
            "divergence": divergence.context()}


def matched(decision: Decision) -> str:
    """One line naming the rules behind a decision, for results and logs."""
    rules = "; ".join(f"{rule.id}: {rule.reason}" if rule.reason else rule.id
                      for rule in decision.rules)
    errors = "; ".join(decision.errors)
    return " | ".join(part for part in (f"{decision.outcome}", rules, errors) if part)


def rules_of(ids: list[str], reasons: dict[str, str]) -> tuple[RuleMatch, ...]:
    return tuple(RuleMatch(id=rule_id, reason=reasons.get(rule_id, "")) for rule_id in ids)
