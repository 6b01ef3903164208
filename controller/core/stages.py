"""A submission's stages, as its transitions mark them: what traces and metrics report.

A stage is the time the submission spent in one state, from the transition into it to the
transition out of it (so ``admission`` holds the wait in the run queue too, and ``commit`` the
publication and the receipt). Sealing the receipt happens inside the last transition and is
timed apart, by whoever seals. The attributes are bounded and say nothing the sandbox chose
(no code, no output, no paths, no reasons): states, outcomes, rule ids, limits, exit codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from controller.core.models import Decision, Gate, Observation, State, Submission

Attributes = Mapping[str, "str | int | float | bool | tuple[str, ...]"]

STAGE_OF = {
    State.RECEIVED: "admission",
    State.DRY_RUN: "dry_run",
    State.ASSESSING: "assessment",
    State.AWAITING_APPROVAL: "approval_wait",
    State.RUNNING: "bounded_run",
    State.VALIDATING: "validation",
    State.COMMITTING: "commit",
}
SEALING = "sealing"
STAGES = (*STAGE_OF.values(), SEALING)  # every stage name, in lifecycle order
GATES_OF = {
    "admission": (Gate.ADMISSION,),
    "assessment": (Gate.ASSESSMENT, Gate.UNATTENDED),
    "validation": (Gate.VALIDATION,),
}


@dataclass(frozen=True)
class Stage:
    name: str
    start: datetime
    end: datetime
    attributes: Attributes = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())


def stages(submission: Submission, transitions: Sequence[tuple[str, datetime]],
           sealing: tuple[datetime, datetime] | None = None) -> list[Stage]:
    """The stages of an ended ``submission`` from its transitions ((to state, at), in order)
    and the sealing of its receipt, if timed."""
    found = []
    for (state, start), (_, end) in pairwise(transitions):
        name = STAGE_OF.get(State(state))
        if name is not None:
            found.append(Stage(name, start, end, stage_attributes(name, submission)))
    if sealing is not None:
        found.append(Stage(SEALING, *sealing, {"sandgate.receipt.sequence":
                                               submission.receipt_seq or 0}))
    return found


def stage_attributes(name: str, submission: Submission) -> Attributes:
    """What a stage's span says: the decisions taken in it, the run it holds."""
    attributes: dict[str, str | int | float | bool | tuple[str, ...]] = {}
    for gate in GATES_OF.get(name, ()):
        decision = _decision(submission.decisions, gate)
        if decision is not None:
            attributes[f"sandgate.decision.{gate.value}.outcome"] = decision.outcome.value
            attributes[f"sandgate.decision.{gate.value}.rules"] = tuple(
                rule.id for rule in decision.rules)
    run = {"dry_run": submission.dry_run, "bounded_run": submission.bounded_run}.get(name)
    if run is not None:
        attributes.update(run_attributes(run))
    if name == "approval_wait" and submission.approval is not None:
        attributes["sandgate.approval.approved"] = submission.approval.approve
    if name == "validation" and submission.divergence is not None:
        attributes["sandgate.divergence"] = submission.divergence.diverged
    if name == "commit" and submission.new_version is not None:
        attributes["sandgate.workspace.version"] = submission.new_version
    return attributes


def run_attributes(run: Observation) -> Attributes:
    """A run's outcome in OpenTelemetry's process conventions where they have a name."""
    attributes: dict[str, str | int | float | bool | tuple[str, ...]] = {
        "sandgate.limits_hit": tuple(limit.value for limit in run.limits_hit),
        "sandgate.run.wall_ms": run.wall_time_ms,
    }
    if run.exit_code is not None:
        attributes["process.exit.code"] = run.exit_code
    if run.signal is not None:
        attributes["sandgate.run.signal"] = run.signal
    if run.peak_memory_bytes is not None:
        attributes["sandgate.run.peak_memory_bytes"] = run.peak_memory_bytes
    return attributes


def submission_attributes(submission: Submission) -> Attributes:
    """What the submission's own span says."""
    return {
        "sandgate.submission.id": submission.id,
        "sandgate.agent": submission.request.agent,
        "sandgate.state": submission.state.value,
        "sandgate.outcome": outcome(submission),
        "sandgate.profile": submission.request.profile,
        "sandgate.language": submission.request.language.value,
        "sandgate.tripwire": tripwire(submission),
    }


def outcome(submission: Submission) -> str:
    """How it ended, in one of four words (a denial before any run is ``deny``)."""
    return {State.COMMITTED: "commit", State.ROLLED_BACK: "rollback",
            State.QUARANTINED: "quarantine", State.DENIED: "deny"}.get(
                submission.state, submission.state.value)


def tripwire(submission: Submission) -> bool:
    """Whether a seccomp tripwire killed either run."""
    return any(run is not None and run.seccomp_killed
               for run in (submission.dry_run, submission.bounded_run))


def _decision(decisions: Sequence[Decision], gate: Gate) -> Decision | None:
    """The last decision taken at ``gate``."""
    for decision in reversed(decisions):
        if decision.gate is gate:
            return decision
    return None
