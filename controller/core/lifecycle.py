"""The submission state machine: which moves are legal and where each stage leads.

Pure: it says what should happen next and never does it. The service persists each move
before the side effect it announces.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.core.models import (
    QUARANTINE_EFFECT,
    Approval,
    Decision,
    Observation,
    Outcome,
    State,
    Submission,
    utcnow,
)
from controller.errors import IllegalTransitionError

TRANSITIONS: dict[State, frozenset[State]] = {
    State.RECEIVED: frozenset({State.DRY_RUN, State.DENIED}),
    State.DRY_RUN: frozenset({State.ASSESSING, State.DENIED}),
    State.ASSESSING: frozenset({State.RUNNING, State.AWAITING_APPROVAL, State.DENIED}),
    State.AWAITING_APPROVAL: frozenset({State.RUNNING, State.DENIED}),
    State.RUNNING: frozenset({State.VALIDATING, State.QUARANTINED, State.ROLLED_BACK}),
    State.VALIDATING: frozenset({State.COMMITTING, State.ROLLED_BACK, State.QUARANTINED}),
    State.COMMITTING: frozenset({State.COMMITTED, State.ROLLED_BACK}),
    State.COMMITTED: frozenset(),
    State.ROLLED_BACK: frozenset(),
    State.QUARANTINED: frozenset(),
    State.DENIED: frozenset(),
}

TERMINAL: frozenset[State] = frozenset(state for state, nxt in TRANSITIONS.items() if not nxt)

# States in which the real run has not started: a failure there can only deny.
BEFORE_BOUNDED_RUN: frozenset[State] = frozenset(
    {State.RECEIVED, State.DRY_RUN, State.ASSESSING, State.AWAITING_APPROVAL}
)


def is_terminal(state: State) -> bool:
    return state in TERMINAL


def check_transition(current: State, target: State) -> State:
    """Return ``target`` if the move is legal, else raise ``IllegalTransitionError``."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"illegal transition {current} -> {target}")
    return target


def advanced(submission: Submission, target: State, **changes: object) -> Submission:
    """The record after a legal move to ``target`` with ``changes`` (``IllegalTransitionError``
    for an illegal one)."""
    check_transition(submission.state, target)
    return submission.model_copy(update={**changes, "state": target, "updated_at": utcnow()})


def safe_terminal(current: State, *, flagged: bool = False) -> State:
    """Where an infrastructure failure or a crash in ``current`` must end."""
    if is_terminal(current):
        return current
    if current in BEFORE_BOUNDED_RUN:
        return State.DENIED
    if flagged and State.QUARANTINED in TRANSITIONS[current]:
        return State.QUARANTINED
    return State.ROLLED_BACK


def after_dry_run(observation: Observation | None) -> State:
    """A dry run that produced no observation is an infrastructure failure, and one whose
    kernel records were lost (a tripwire may be among them) cannot be assessed: deny."""
    if observation is None or observation.incomplete is not None:
        return State.DENIED
    return State.ASSESSING


def after_assessment(decision: Decision) -> State:
    """Only an explicit PERMIT runs; SILENCE is a denial (fail closed)."""
    if decision.outcome is Outcome.PERMIT:
        return State.RUNNING
    if decision.outcome is Outcome.REQUIRE_APPROVAL:
        return State.AWAITING_APPROVAL
    return State.DENIED


def after_bounded_run(observation: Observation | None, hazards: Iterable[str] = ()) -> State:
    """A tripwire or a hazard quarantines; any failure or limit rolls back; success validates.

    ``hazards`` (``validation.hazards`` of the run's diff) are weighed before the failure: a
    run that plants a setuid file or an escaping symlink and then fails on purpose must not
    slip away as an ordinary rollback with its evidence discarded.
    """
    if observation is None:
        return State.ROLLED_BACK
    # An incomplete observation (kernel records lost after a clean dry run) may hide a
    # tripwire: it never commits, and its evidence is kept.
    if observation.seccomp_killed or observation.incomplete is not None or any(
            True for _ in hazards):
        return State.QUARANTINED
    if not observation.succeeded:
        return State.ROLLED_BACK
    return State.VALIDATING


def after_validation(violations: Iterable[str], decision: Decision) -> State:
    """Invariant violations quarantine (the run diverged from what was assessed), and so does
    a policy forbid carrying ``@effect("quarantine")``; any other refusal rolls back."""
    if any(True for _ in violations):
        return State.QUARANTINED
    if decision.outcome is Outcome.PERMIT:
        return State.COMMITTING
    if decision.outcome is Outcome.DENY and decision.effect == QUARANTINE_EFFECT:
        return State.QUARANTINED
    return State.ROLLED_BACK


def after_admission(decision: Decision) -> State:
    """Only an explicit PERMIT lets a submission reach its dry run."""
    return State.DRY_RUN if decision.outcome is Outcome.PERMIT else State.DENIED


def after_approval(approval: Approval) -> State:
    return State.RUNNING if approval.approve else State.DENIED

