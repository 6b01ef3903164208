"""The state machine against the design, not against itself.

The legal moves are written out below by hand from the lifecycle table of DESIGN.md, in the
design's own words; the module under test must allow exactly those and refuse each of the
other pairs of states. What each stage decides is stated case by case, from what it sees.
"""

from __future__ import annotations

import itertools

import pytest

from controller.core.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    after_admission,
    after_approval,
    after_assessment,
    after_bounded_run,
    after_dry_run,
    after_validation,
    check_transition,
    is_terminal,
    safe_terminal,
)
from controller.core.models import (
    QUARANTINE_EFFECT,
    Approval,
    Decision,
    Gate,
    Observation,
    Outcome,
    Phase,
    State,
    StreamSummary,
)
from controller.errors import IllegalTransitionError

S = State
EMPTY = StreamSummary(size=0, sha256="0" * 64)

# DESIGN.md, "The lifecycle": from -> may move to.
DESIGN_MOVES: frozenset[tuple[str, str]] = frozenset({
    ("received", "dry_run"), ("received", "denied"),
    ("dry_run", "assessing"), ("dry_run", "denied"),
    ("assessing", "running"), ("assessing", "awaiting_approval"), ("assessing", "denied"),
    ("awaiting_approval", "running"), ("awaiting_approval", "denied"),
    ("running", "validating"), ("running", "quarantined"), ("running", "rolled_back"),
    ("validating", "committing"), ("validating", "rolled_back"), ("validating", "quarantined"),
    ("committing", "committed"), ("committing", "rolled_back"),
})
# "committed, rolled_back, quarantined, denied: nothing: terminal, one receipt each"
DESIGN_TERMINAL: frozenset[str] = frozenset({"committed", "rolled_back", "quarantined", "denied"})

EVERY_PAIR = list(itertools.product(State, State))


def observation(**kwargs: object) -> Observation:
    fields: dict[str, object] = {"phase": Phase.BOUNDED, "exit_code": 0, "wall_time_ms": 1.0,
                                 "stdout": EMPTY, "stderr": EMPTY, "image_id": "img"}
    return Observation.model_validate({**fields, **kwargs})


def decision(outcome: Outcome, effect: str | None = None) -> Decision:
    return Decision(gate=Gate.ASSESSMENT, outcome=outcome, effect=effect)


def allowed(source: State, target: State) -> bool:
    """The module's answer to one move, as yes or no."""
    try:
        check_transition(source, target)
    except IllegalTransitionError:
        return False
    return True


def test_the_design_and_the_model_name_the_same_states() -> None:
    named = {name for move in DESIGN_MOVES for name in move}
    assert named == {state.value for state in State} and len(EVERY_PAIR) == 121
    assert DESIGN_TERMINAL.issubset(named)
    assert not {source for source, _ in DESIGN_MOVES} & DESIGN_TERMINAL


@pytest.mark.parametrize(("source", "target"), EVERY_PAIR)
def test_a_move_is_allowed_exactly_when_the_design_lists_it(source: State,
                                                            target: State) -> None:
    if (source.value, target.value) in DESIGN_MOVES:
        assert check_transition(source, target) is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"{source} -> {target}"):
            check_transition(source, target)


def test_the_exported_table_is_the_designs() -> None:
    assert set(TRANSITIONS) == set(State)
    assert {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets} == (
        DESIGN_MOVES)
    assert {state.value for state in TERMINAL} == DESIGN_TERMINAL


@pytest.mark.parametrize("state", list(State))
def test_terminal_means_what_the_design_says(state: State) -> None:
    assert is_terminal(state) is (state.value in DESIGN_TERMINAL)


def _paths(state: State, seen: tuple[State, ...] = ()) -> list[tuple[State, ...]]:
    """Every walk from ``state`` along the moves the module allows, to where none is left."""
    here = (*seen, state)
    assert state not in seen, f"a cycle: {here}"
    following = [target for target in State if allowed(state, target)]
    if not following:
        return [here]
    return [path for nxt in following for path in _paths(nxt, here)]


def test_every_path_from_received_ends_in_a_terminal_state() -> None:
    paths = _paths(S.RECEIVED)
    assert {path[-1].value for path in paths} == DESIGN_TERMINAL  # no dead end, all reached
    assert {state for path in paths for state in path} == set(State)
    # By hand from the table: 4 ways to be denied, then 6 endings after `running`, reached
    # directly or through an approval.
    assert len(paths) == 4 + 2 * 6
    assert (S.RECEIVED, S.DRY_RUN, S.ASSESSING, S.RUNNING, S.VALIDATING, S.COMMITTING,
            S.COMMITTED) in paths
    assert (S.RECEIVED, S.DRY_RUN, S.ASSESSING, S.AWAITING_APPROVAL, S.RUNNING, S.VALIDATING,
            S.COMMITTING, S.COMMITTED) in paths


# DESIGN.md: an infrastructure failure ends "before the bounded run -> denied; after ->
# rolled_back (or quarantined if the sandbox was flagged)"; `committing` may not move to
# `quarantined`, and a terminal state stays where it is.
SAFE_TERMINAL = [
    (S.RECEIVED, False, S.DENIED), (S.RECEIVED, True, S.DENIED),
    (S.DRY_RUN, False, S.DENIED), (S.DRY_RUN, True, S.DENIED),
    (S.ASSESSING, False, S.DENIED), (S.ASSESSING, True, S.DENIED),
    (S.AWAITING_APPROVAL, False, S.DENIED), (S.AWAITING_APPROVAL, True, S.DENIED),
    (S.RUNNING, False, S.ROLLED_BACK), (S.RUNNING, True, S.QUARANTINED),
    (S.VALIDATING, False, S.ROLLED_BACK), (S.VALIDATING, True, S.QUARANTINED),
    (S.COMMITTING, False, S.ROLLED_BACK), (S.COMMITTING, True, S.ROLLED_BACK),
    (S.COMMITTED, False, S.COMMITTED), (S.COMMITTED, True, S.COMMITTED),
    (S.ROLLED_BACK, False, S.ROLLED_BACK), (S.ROLLED_BACK, True, S.ROLLED_BACK),
    (S.QUARANTINED, False, S.QUARANTINED), (S.QUARANTINED, True, S.QUARANTINED),
    (S.DENIED, False, S.DENIED), (S.DENIED, True, S.DENIED),
]


def test_safe_terminal_cases_cover_every_state_flagged_or_not() -> None:
    assert [(state, flagged) for state, flagged, _ in SAFE_TERMINAL] == list(
        itertools.product(State, (False, True)))


@pytest.mark.parametrize(("state", "flagged", "expected"), SAFE_TERMINAL)
def test_safe_terminal_fails_closed(state: State, flagged: bool, expected: State) -> None:
    target = safe_terminal(state, flagged=flagged)
    assert target is expected
    assert target.value in DESIGN_TERMINAL
    if target is not state:
        assert (state.value, target.value) in DESIGN_MOVES
        check_transition(state, target)


def _one_move(source: State, target: State) -> None:
    """A stage's answer is a move the design allows from where the stage stands."""
    assert (source.value, target.value) in DESIGN_MOVES


@pytest.mark.parametrize(("outcome", "expected"), [
    (Outcome.PERMIT, S.DRY_RUN),
    (Outcome.DENY, S.DENIED),
    (Outcome.REQUIRE_APPROVAL, S.DENIED),
    (Outcome.SILENCE, S.DENIED),
])
def test_only_an_explicit_permit_admits(outcome: Outcome, expected: State) -> None:
    assert after_admission(decision(outcome)) is expected
    _one_move(S.RECEIVED, expected)


@pytest.mark.parametrize(("seen", "expected"), [
    pytest.param(None, S.DENIED, id="no observation: infrastructure failure"),
    pytest.param(observation(phase=Phase.DRY_RUN), S.ASSESSING, id="clean"),
    pytest.param(observation(phase=Phase.DRY_RUN, exit_code=1), S.ASSESSING,
                 id="the program failed: the policy weighs it"),
    pytest.param(observation(phase=Phase.DRY_RUN, exit_code=159, seccomp_killed=True),
                 S.ASSESSING, id="a tripwire: the policy weighs it"),
    pytest.param(observation(phase=Phase.DRY_RUN, incomplete="kernel records lost"), S.DENIED,
                 id="incomplete: cannot be assessed"),
])
def test_after_the_dry_run(seen: Observation | None, expected: State) -> None:
    assert after_dry_run(seen) is expected
    _one_move(S.DRY_RUN, expected)


@pytest.mark.parametrize(("outcome", "expected"), [
    (Outcome.PERMIT, S.RUNNING),
    (Outcome.REQUIRE_APPROVAL, S.AWAITING_APPROVAL),
    (Outcome.DENY, S.DENIED),
    (Outcome.SILENCE, S.DENIED),  # fail closed
])
def test_after_the_assessment(outcome: Outcome, expected: State) -> None:
    assert after_assessment(decision(outcome)) is expected
    _one_move(S.ASSESSING, expected)


@pytest.mark.parametrize(("approve", "expected"), [(True, S.RUNNING), (False, S.DENIED)])
def test_after_the_approval(approve: bool, expected: State) -> None:
    assert after_approval(Approval(approver="carol", approve=approve, reason="r")) is expected
    _one_move(S.AWAITING_APPROVAL, expected)


PLANTED = ["setuid/setgid file: tool"]


@pytest.mark.parametrize(("seen", "hazards", "expected"), [
    pytest.param(None, [], S.ROLLED_BACK, id="no observation: infrastructure failure"),
    pytest.param(observation(), [], S.VALIDATING, id="clean"),
    pytest.param(observation(exit_code=1), [], S.ROLLED_BACK, id="exit code 1"),
    pytest.param(observation(exit_code=137, timed_out=True), [], S.ROLLED_BACK, id="timeout"),
    pytest.param(observation(exit_code=137, oom_killed=True), [], S.ROLLED_BACK, id="oom"),
    pytest.param(observation(pids_limit_hit=True), [], S.ROLLED_BACK, id="pids limit"),
    pytest.param(observation(stdout=StreamSummary(size=9, sha256="x", truncated=True)), [],
                 S.ROLLED_BACK, id="output limit"),
    pytest.param(observation(exit_code=159, seccomp_killed=True), [], S.QUARANTINED,
                 id="tripwire"),
    pytest.param(observation(incomplete="kernel records lost"), [], S.QUARANTINED,
                 id="incomplete: may hide a tripwire"),
    # The hazards of a run are weighed before its failure: no quiet rollback.
    pytest.param(observation(), PLANTED, S.QUARANTINED, id="clean with a hazard"),
    pytest.param(observation(exit_code=1), PLANTED, S.QUARANTINED,
                 id="exit code 1 with a hazard"),
    pytest.param(observation(exit_code=137, timed_out=True), PLANTED, S.QUARANTINED,
                 id="timeout with a hazard"),
])
def test_after_the_bounded_run(seen: Observation | None, hazards: list[str],
                               expected: State) -> None:
    assert after_bounded_run(seen, hazards) is expected
    _one_move(S.RUNNING, expected)


def test_the_bounded_run_without_hazards_given_weighs_none() -> None:
    assert after_bounded_run(observation()) is S.VALIDATING
    assert after_bounded_run(observation(exit_code=1)) is S.ROLLED_BACK


@pytest.mark.parametrize(("violations", "verdict", "expected"), [
    pytest.param([], decision(Outcome.PERMIT), S.COMMITTING, id="permit"),
    pytest.param([], decision(Outcome.DENY), S.ROLLED_BACK, id="deny"),
    pytest.param([], decision(Outcome.DENY, QUARANTINE_EFFECT), S.QUARANTINED,
                 id="deny with the quarantine effect"),
    pytest.param([], decision(Outcome.SILENCE), S.ROLLED_BACK, id="silence"),
    pytest.param([], decision(Outcome.REQUIRE_APPROVAL), S.ROLLED_BACK,
                 id="only a permit commits"),
    pytest.param(["setuid"], decision(Outcome.PERMIT), S.QUARANTINED,
                 id="a violation, permitted"),
    pytest.param(["setuid"], decision(Outcome.DENY), S.QUARANTINED, id="a violation, denied"),
])
def test_after_validation(violations: list[str], verdict: Decision, expected: State) -> None:
    assert after_validation(violations, verdict) is expected
    _one_move(S.VALIDATING, expected)


def test_limits_are_named() -> None:
    hit = observation(exit_code=137, oom_killed=True, timed_out=True,
                      stdout=StreamSummary(size=9, sha256="x", truncated=True))
    assert [limit.value for limit in hit.limits_hit] == ["wall_time", "memory", "output"]
    assert not hit.succeeded
