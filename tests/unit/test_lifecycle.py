"""The state machine: every legal move, every illegal one, every path to each terminal."""

from __future__ import annotations

import itertools

import pytest

from controller.core.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    after_assessment,
    after_bounded_run,
    after_dry_run,
    after_validation,
    check_transition,
    is_terminal,
    safe_terminal,
)
from controller.core.models import Decision, Gate, Observation, Outcome, Phase, State, StreamSummary
from controller.errors import IllegalTransitionError

S = State
EMPTY = StreamSummary(size=0, sha256="0" * 64)


def observation(**kwargs: object) -> Observation:
    fields: dict[str, object] = {"phase": Phase.BOUNDED, "exit_code": 0, "wall_time_ms": 1.0,
                                 "stdout": EMPTY, "stderr": EMPTY, "image_id": "img"}
    return Observation.model_validate({**fields, **kwargs})


def decision(outcome: Outcome) -> Decision:
    return Decision(gate=Gate.ASSESSMENT, outcome=outcome)


LEGAL = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
ILLEGAL = [(a, b) for a, b in itertools.product(State, State) if (a, b) not in LEGAL]


def test_the_table_is_the_designs() -> None:
    assert set(LEGAL) == {
        (S.RECEIVED, S.DRY_RUN), (S.RECEIVED, S.DENIED),
        (S.DRY_RUN, S.ASSESSING), (S.DRY_RUN, S.DENIED),
        (S.ASSESSING, S.RUNNING), (S.ASSESSING, S.AWAITING_APPROVAL), (S.ASSESSING, S.DENIED),
        (S.AWAITING_APPROVAL, S.RUNNING), (S.AWAITING_APPROVAL, S.DENIED),
        (S.RUNNING, S.VALIDATING), (S.RUNNING, S.QUARANTINED), (S.RUNNING, S.ROLLED_BACK),
        (S.VALIDATING, S.COMMITTING), (S.VALIDATING, S.ROLLED_BACK),
        (S.VALIDATING, S.QUARANTINED),
        (S.COMMITTING, S.COMMITTED), (S.COMMITTING, S.ROLLED_BACK),
    }
    assert {S.COMMITTED, S.ROLLED_BACK, S.QUARANTINED, S.DENIED} == TERMINAL


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_every_legal_transition_is_allowed(source: State, target: State) -> None:
    assert check_transition(source, target) is target


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_every_illegal_transition_raises(source: State, target: State) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{source} -> {target}"):
        check_transition(source, target)


def _paths(state: State, seen: tuple[State, ...] = ()) -> list[tuple[State, ...]]:
    here = (*seen, state)
    if is_terminal(state):
        return [here]
    return [path for nxt in TRANSITIONS[state] for path in _paths(nxt, here)]


def test_every_terminal_state_is_reachable_from_received_and_paths_end() -> None:
    paths = _paths(S.RECEIVED)
    assert {path[-1] for path in paths} == TERMINAL
    assert all(len(path) <= 8 for path in paths)  # acyclic: every path ends
    assert (S.RECEIVED, S.DRY_RUN, S.ASSESSING, S.RUNNING, S.VALIDATING, S.COMMITTING,
            S.COMMITTED) in paths


@pytest.mark.parametrize(("state", "flagged", "expected"), [
    (S.RECEIVED, False, S.DENIED), (S.DRY_RUN, False, S.DENIED),
    (S.ASSESSING, False, S.DENIED), (S.AWAITING_APPROVAL, False, S.DENIED),
    (S.RUNNING, False, S.ROLLED_BACK), (S.RUNNING, True, S.QUARANTINED),
    (S.VALIDATING, False, S.ROLLED_BACK), (S.VALIDATING, True, S.QUARANTINED),
    (S.COMMITTING, False, S.ROLLED_BACK), (S.COMMITTING, True, S.ROLLED_BACK),
    (S.COMMITTED, False, S.COMMITTED),
])
def test_safe_terminal_fails_closed(state: State, flagged: bool, expected: State) -> None:
    target = safe_terminal(state, flagged=flagged)
    assert target is expected
    if target is not state:
        check_transition(state, target)


def test_stage_outcomes() -> None:
    assert after_dry_run(None) is S.DENIED
    assert after_dry_run(observation()) is S.ASSESSING
    assert after_assessment(decision(Outcome.PERMIT)) is S.RUNNING
    assert after_assessment(decision(Outcome.DENY)) is S.DENIED
    assert after_assessment(decision(Outcome.SILENCE)) is S.DENIED
    assert after_assessment(decision(Outcome.REQUIRE_APPROVAL)) is S.AWAITING_APPROVAL
    assert after_bounded_run(None) is S.ROLLED_BACK
    assert after_bounded_run(observation()) is S.VALIDATING
    assert after_bounded_run(observation(exit_code=1)) is S.ROLLED_BACK
    assert after_bounded_run(observation(exit_code=137, timed_out=True)) is S.ROLLED_BACK
    assert after_bounded_run(observation(exit_code=159, seccomp_killed=True)) is S.QUARANTINED
    assert after_validation([], decision(Outcome.PERMIT)) is S.COMMITTING
    assert after_validation([], decision(Outcome.DENY)) is S.ROLLED_BACK
    assert after_validation([], decision(Outcome.SILENCE)) is S.ROLLED_BACK
    assert after_validation(["setuid"], decision(Outcome.PERMIT)) is S.QUARANTINED


def test_hazards_of_a_failed_bounded_run_quarantine_before_the_rollback() -> None:
    planted = ["setuid/setgid file: tool"]
    assert after_bounded_run(observation(exit_code=1), planted) is S.QUARANTINED
    assert after_bounded_run(observation(exit_code=137, timed_out=True), planted) is (
        S.QUARANTINED)
    assert after_bounded_run(observation(), planted) is S.QUARANTINED
    assert after_bounded_run(observation(exit_code=1), []) is S.ROLLED_BACK


def test_limits_are_named() -> None:
    hit = observation(exit_code=137, oom_killed=True, timed_out=True,
                      stdout=StreamSummary(size=9, sha256="x", truncated=True))
    assert [limit.value for limit in hit.limits_hit] == ["wall_time", "memory", "output"]
    assert not hit.succeeded
