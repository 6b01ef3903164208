"""Pools of started sandboxes, through the whole service on the fake runtime: a submission
takes a ready pair (both runs, one held uid) or starts its own; pools refill, grow after
misses, replace stale pairs, and leave nothing when closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime, FakeSandbox, Outcome
from controller.adapters.store.submissions import Store
from controller.core.models import Language, Phase, State
from controller.core.ports import SUBMISSION_UIDS, RunResult, RunSpec
from controller.errors import ProfileError, RuntimeUnavailableError, SandboxGoneError, StoreError
from controller.profiles.load import load_profile
from controller.service.controller import Controller
from tests.conftest import ROOT, make_controller, python

Pooled = Controller[Store, ShadowedEngine]


def pooled_profiles(tmp_path: Path, **pool: object) -> Path:
    """The shipped profiles; ``standard`` with ``pool``."""
    directory = tmp_path / "profiles"
    directory.mkdir(exist_ok=True)
    for source in (ROOT / "profiles").glob("*.yaml"):
        raw = yaml.safe_load(source.read_text())
        raw["seccomp"] = str((source.parent / raw["seccomp"]).resolve())
        if source.stem == "standard":
            raw["pool"] = pool
        (directory / source.name).write_text(yaml.safe_dump(raw))
    return directory


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def ready(controller: Pooled, name: str = "standard") -> int:
    return controller.pool.state()[name].ready


@pytest.fixture
def runtime() -> FakeRuntime:
    def writes(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "out.txt").write_text(f"uid {spec.uid}")
        return Outcome(stdout=b"hi\n")
    return FakeRuntime(behaviour=writes)


@pytest.fixture
def pooled(tmp_path: Path, runtime: FakeRuntime) -> Iterator[Pooled]:
    controller = make_controller(tmp_path / "data", runtime,
                                 profiles_dir=pooled_profiles(tmp_path, min=2, max=3))
    controller.pool.start()
    try:
        yield controller
    finally:
        controller.pool.close()


def test_a_submission_runs_in_a_ready_pair_and_the_pool_refills(
        pooled: Pooled, runtime: FakeRuntime) -> None:
    wait_until(lambda: ready(pooled) == 2)
    started_before = len(runtime.started)
    result = pooled.submit(python("print('hi')"))
    assert result.state is State.COMMITTED, result.reason
    dry, real = runtime.runs
    # Both runs in one pair's sandboxes (started before the submission existed), one uid.
    assert dry.submission_id == real.submission_id and dry.submission_id.startswith("pool-")
    assert (dry.phase, real.phase) == (Phase.DRY_RUN, Phase.BOUNDED)
    assert dry.uid == real.uid == result.sandbox_uid
    assert (pooled.workspaces.version_dir("@local/default", 1) / "out.txt").read_text() == (
        f"uid {result.sandbox_uid}")
    state = pooled.pool.state()["standard"]
    assert (state.hits, state.misses) == (1, 0)
    wait_until(lambda: ready(pooled) == 2)
    assert len(runtime.started) == started_before + 2  # one new pair: used ones never return
    assert not (pooled.paths.runs / "pool" / dry.submission_id).exists()


def test_a_miss_starts_its_own_and_grows_the_pool_up_to_max(
        pooled: Pooled, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_until(lambda: ready(pooled) == 2)
    refill = threading.Event()  # closed: the pool starts nothing until it opens
    start = runtime.start

    def held_start(spec: RunSpec) -> FakeSandbox:
        if spec.submission_id.startswith("pool-"):
            refill.wait(10)
        return start(spec)

    monkeypatch.setattr(runtime, "start", held_start)
    results = [pooled.submit(python(f"print({n})")) for n in range(4)]
    assert [r.state for r in results] == [State.COMMITTED] * 4
    state = pooled.pool.state()["standard"]
    assert (state.hits, state.misses) == (2, 2)
    assert state.target == 3  # raised by the misses, never past max
    refill.set()
    wait_until(lambda: ready(pooled) == 3)


def test_another_language_or_profile_finds_no_pair(pooled: Pooled,
                                                   runtime: FakeRuntime) -> None:
    wait_until(lambda: ready(pooled) == 2)
    sh = pooled.submit(python("echo hi").model_copy(update={"language": Language.SH}))
    strict = pooled.submit(python("print(1)").model_copy(update={"profile": "strict"}))
    assert sh.state is State.COMMITTED and strict.state is State.COMMITTED
    assert all(not spec.submission_id.startswith("pool-") for spec in runtime.runs)
    assert pooled.pool.state()["standard"].hits == 0
    assert "strict" in pooled.pool.state() and pooled.pool.state()["strict"].max == 0


def test_a_held_uid_is_never_claimed_by_another_submission(pooled: Pooled) -> None:
    wait_until(lambda: ready(pooled) == 2)
    held = {uid for uid in SUBMISSION_UIDS if uid in _holds(pooled)}
    assert len(held) == 2
    store = pooled.store
    for n in range(50):
        sub = pooled.accept(python(f"print({n})"))
        assert store.claim_uid(sub.id, SUBMISSION_UIDS) not in held


def test_a_changed_profile_s_pairs_are_replaced(tmp_path: Path, pooled: Pooled,
                                                runtime: FakeRuntime) -> None:
    wait_until(lambda: ready(pooled) == 2)
    old = {spec.submission_id for spec in runtime.started}
    pooled.reload_profiles(pooled_profiles(tmp_path, min=1, max=1, ttl_s=300))
    wait_until(lambda: pooled.pool.state()["standard"].replaced == 2 and ready(pooled) == 1)
    assert {spec.submission_id for spec in runtime.discarded} >= old
    result = pooled.submit(python("print(1)"))
    assert result.state is State.COMMITTED
    assert runtime.runs[0].submission_id.startswith("pool-")
    assert runtime.runs[0].profile.digest == pooled.profiles["standard"].digest


def test_closing_removes_every_pair_directory_and_hold(pooled: Pooled,
                                                       runtime: FakeRuntime) -> None:
    wait_until(lambda: ready(pooled) == 2)
    pooled.pool.close()
    assert {s.submission_id for s in runtime.discarded} == {
        s.submission_id for s in runtime.started}
    assert _holds(pooled) == set()
    assert list((pooled.paths.runs / "pool").iterdir()) == []
    assert pooled.pool.take(pooled.profiles["standard"], Language.PYTHON, "x") is None


def test_a_parked_submission_gives_its_real_sandbox_back(tmp_path: Path,
                                                         runtime: FakeRuntime) -> None:
    from tests.conftest import bundle_with, parking_rule
    controller = make_controller(tmp_path / "data", runtime,
                                 profiles_dir=pooled_profiles(tmp_path, min=1, max=1),
                                 policy_dir=bundle_with(tmp_path, "parks", parking_rule(0)))
    controller.pool.start()
    try:
        wait_until(lambda: ready(controller) == 1)
        parked = controller.submit(python("print(1)"))
        assert parked.state is State.AWAITING_APPROVAL
        assert [spec.phase for spec in runtime.discarded] == [Phase.BOUNDED]
        assert not (controller.paths.runs / "pool" / runtime.runs[0].submission_id).exists()
    finally:
        controller.pool.close()


def test_a_pool_past_its_max_or_below_its_min_is_refused(tmp_path: Path) -> None:
    directory = pooled_profiles(tmp_path, min=3, max=1)
    with pytest.raises(ProfileError, match=r"max \(1\) is below min \(3\)"):
        load_profile(directory / "standard.yaml")


def _holds(controller: Pooled) -> set[int]:
    with controller.store._transaction() as db:
        return {int(row[0]) for row in db.execute("SELECT uid FROM uid_holds")}


def test_a_pooled_sandbox_gone_while_waiting_is_replaced_by_a_new_one(
        pooled: Pooled, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_until(lambda: ready(pooled) == 2)
    pair = pooled.pool._ready[next(iter(pooled.pool._ready))][0]
    sandbox = pair.dry.sandbox
    assert isinstance(sandbox, FakeSandbox)

    def gone() -> RunResult:
        raise SandboxGoneError("the sandbox container stopped before its run (exited)")

    monkeypatch.setattr(sandbox, "run", gone)
    result = pooled.submit(python("print(1)"))
    assert result.state is State.COMMITTED, result.reason
    # The dry run ran in a sandbox started for it then, as the pair's uid, in its mounts.
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN, Phase.BOUNDED]
    assert runtime.runs[0].uid == runtime.runs[1].uid == result.sandbox_uid == pair.uid


def test_expired_pairs_lower_the_target_one_each_and_the_cap_holds(
        tmp_path: Path, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controller.service.pool.MAX_PAIRS", 3)
    controller = make_controller(tmp_path / "data", runtime, profiles_dir=pooled_profiles(
        tmp_path, min=1, max=8, ttl_s=0.3))
    pool = controller.pool
    pool.start()
    try:
        wait_until(lambda: ready(controller) == 1)
        with pool._lock:
            pool._target[next(iter(pool._ready))] = 8  # as after a burst of misses
        time.sleep(1.0)
        assert ready(controller) <= 3  # the cap on pairs held at once
        wait_until(lambda: pool.state()["standard"].target == 1, timeout=5)
    finally:
        pool.close()


def test_a_pair_whose_uid_cannot_be_moved_is_not_left_behind(
        pooled: Pooled, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    wait_until(lambda: ready(pooled) == 2)

    def broken(holder: str, submission_id: str) -> int | None:
        raise StoreError("the disk is full")

    monkeypatch.setattr(pooled.store, "take_held_uid", broken)
    result = pooled.submit(python("print(1)"))
    assert result.state is State.DENIED, result.reason
    taken = {s.submission_id for s in runtime.started} - {
        s.submission_id for s in runtime.started if s.submission_id in _ready_holders(pooled)}
    assert {s.submission_id for s in runtime.discarded} >= taken
    for holder in taken:
        assert not (pooled.paths.runs / "pool" / holder).exists()


def test_an_image_that_cannot_be_resolved_for_a_moment_keeps_its_pairs(
        pooled: Pooled, runtime: FakeRuntime) -> None:
    wait_until(lambda: ready(pooled) == 2)

    def unresolvable(image: str) -> str:
        raise RuntimeUnavailableError("the engine does not answer")

    resolve, runtime.images = runtime.images, unresolvable
    time.sleep(1.2)  # two passes of the refill
    assert ready(pooled) == 2 and runtime.discarded == []
    runtime.images = resolve


def _ready_holders(controller: Pooled) -> set[str]:
    with controller.pool._lock:
        return {pair.holder for pairs in controller.pool._ready.values() for pair in pairs}


def test_a_pool_still_holding_a_pair_refills_only_once_no_submission_is_driven(
        tmp_path: Path) -> None:
    # A start beside a run slows the run: while the next submission still finds a pair, the
    # refill waits for the runs to end; an empty pool refills at once whatever runs.
    gate, started = threading.Event(), threading.Event()

    def blocks(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.DRY_RUN:
            started.set()
            assert gate.wait(10)
        return Outcome(stdout=b"hi\n")

    runtime = FakeRuntime(behaviour=blocks)
    controller = make_controller(tmp_path / "data", runtime,
                                 profiles_dir=pooled_profiles(tmp_path, min=2, max=2))
    controller.pool.start()
    threads: list[threading.Thread] = []
    try:
        wait_until(lambda: ready(controller) == 2)
        running = threading.Thread(target=controller.submit, args=(python("print(1)"),))
        threads.append(running)
        running.start()
        assert started.wait(10)
        time.sleep(1.5)  # three refill ticks: none starts a pair beside the run
        assert ready(controller) == 1
        gate.set()
        running.join(10)
        wait_until(lambda: ready(controller) == 2)  # the run is over: refilled
        gate.clear()
        started.clear()
        first = threading.Thread(target=controller.submit, args=(python("print(2)"),))
        second = threading.Thread(target=controller.submit, args=(python("print(3)"),))
        threads += [first, second]
        first.start()
        assert started.wait(10)
        second.start()
        wait_until(lambda: ready(controller) >= 1)  # empty: refilled while both are driven
    finally:
        gate.set()
        for thread in threads:
            thread.join(10)
        controller.pool.close()
