"""The run queue's fair shares, on a fake controller whose runs wait on events: one principal
flooding cannot starve another, its overflow is refused first, workers serve principals
round-robin within their running quota, and every place taken is given back. And the quotas
principals keep in their rows, old databases migrated in place."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from controller.adapters.store.principals import Principals, Quota
from controller.cli.main import main
from controller.core.models import Role, State, Submission, SubmissionRequest
from controller.errors import (
    InputError,
    NotFoundError,
    OverloadedError,
    RateLimitedError,
    RetryableError,
    UnavailableError,
)
from controller.service import dispatcher as dispatcher_module
from controller.service.dispatcher import Dispatcher, Share


def request(agent: str, code: str) -> SubmissionRequest:
    return SubmissionRequest.model_validate({"language": "python", "code": code,
                                             "agent": agent})


class FakeStore:
    def __init__(self) -> None:
        self.records: dict[str, Submission] = {}

    def get(self, submission_id: str) -> Submission | None:
        return self.records.get(submission_id)

    def owner_of(self, submission_id: str) -> tuple[str, str] | None:
        found = self.records.get(submission_id)
        return (found.request.agent, found.state.value) if found else None


class FakeController:
    """Records submissions in memory; a run waits until its code is released (or, for the
    agents in ``instant``, ends at once)."""

    def __init__(self, instant: frozenset[str] = frozenset()) -> None:
        self.store = FakeStore()
        self.instant = instant
        self.lock = threading.Lock()
        self.started: list[str] = []  # codes, in the order the workers took them
        self.finished: list[str] = []
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.released: dict[str, threading.Event] = {}
        self.keys: dict[tuple[str, str], Submission] = {}
        self.fail_accept: set[str] = set()
        self.fail_process: set[str] = set()

    def gate(self, code: str) -> threading.Event:
        with self.lock:
            return self.released.setdefault(code, threading.Event())

    def release(self, *codes: str) -> None:
        for code in codes:
            self.gate(code).set()

    def release_all(self) -> None:
        self.instant = frozenset({"*"})
        with self.lock:
            gates = list(self.released.values())
        for gate in gates:
            gate.set()

    def accept_once(self, request: SubmissionRequest,
                    idempotency: tuple[str, str] | None = None) -> tuple[Submission, bool]:
        if request.code in self.fail_accept:
            raise InputError("refused by the fake")
        with self.lock:
            key = (request.agent, idempotency[0]) if idempotency else None
            if key in self.keys:
                return self.keys[key], False
            submission = Submission(id=uuid.uuid4().hex, trace_id=uuid.uuid4().hex,
                                    request=request, code_sha256="0" * 64)
            self.store.records[submission.id] = submission
            if key is not None:
                self.keys[key] = submission
        return submission, True

    def process(self, submission: Submission) -> Submission:
        agent, code = submission.request.agent, submission.request.code
        with self.lock:
            self.started.append(code)
            self.running[agent] += 1
            self.peak[agent] = max(self.peak[agent], self.running[agent])
        try:
            if agent not in self.instant and "*" not in self.instant:
                assert self.gate(code).wait(20), f"{code} never released"
            if code in self.fail_process:
                raise RuntimeError("the fake's run failed")
            return submission
        finally:
            with self.lock:
                self.running[agent] -= 1
                self.finished.append(code)

    def approve(self, submission_id: str, approver: str, approve: bool,
                reason: str) -> Submission:
        found = self.store.records[submission_id]
        moved = found.model_copy(update={
            "state": State.RUNNING if approve else State.DENIED})
        self.store.records[submission_id] = moved
        return moved

    def expire_approvals(self, ttl_s: float) -> list[Submission]:
        return []


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def holds(items: list[str], item: str) -> Callable[[], bool]:
    return lambda: item in items


def grown_to(items: list[str], size: int) -> Callable[[], bool]:
    return lambda: len(items) == size


@pytest.fixture
def fake() -> Iterator[FakeController]:
    controller = FakeController()
    yield controller
    controller.release_all()


def test_defaults_are_half_the_workers_and_half_the_queue(fake: FakeController) -> None:
    assert Dispatcher(fake, workers=4, queue_size=64).default_share == Share(2, 32)
    assert Dispatcher(fake, workers=1, queue_size=0).default_share == Share(1, 1)
    assert Dispatcher(fake, workers=3, queue_size=5).default_share == Share(2, 3)
    own = Dispatcher(fake, workers=4, queue_size=64, max_running=3,
                     quota_of=lambda name: (None, 7) if name == "batch" else (None, None))
    assert own.share_of("batch") == Share(3, 7)
    assert own.share_of("anyone") == Share(3, 32)


def test_a_flood_at_its_quota_does_not_starve_another_tenant(fake: FakeController) -> None:
    fake.instant = frozenset({"b"})  # b's runs end at once; a's wait
    dispatcher = Dispatcher(fake, workers=2, queue_size=30)
    dispatcher.start()
    accepted_a = refused_a = 0
    for n in range(40):
        try:
            dispatcher.submit(request("a", f"a{n}"))
            accepted_a += 1
        except RateLimitedError:
            refused_a += 1
    assert refused_a > 0 and accepted_a <= 1 + dispatcher.default_share.max_queued
    wait_until(lambda: fake.started == ["a0"])
    accepted_b = []
    for n in range(20):
        try:
            dispatcher.submit(request("b", f"b{n}"))
        except RetryableError:
            continue
        accepted_b.append(f"b{n}")
        wait_until(holds(fake.finished, f"b{n}"))
    assert len(accepted_b) >= 18  # at least 90 %
    # Every one of b's ran while a's backlog stayed where it was: a0 alone has started.
    assert [code for code in fake.started if code.startswith("a")] == ["a0"]
    assert [code for code in fake.started if code.startswith("b")] == accepted_b
    fake.release_all()
    dispatcher.drain(timeout=10)


def test_the_greedy_tenants_overflow_is_refused_while_the_other_is_accepted(
        fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=2, queue_size=30, max_queued=5,
                            retry_after=3.0)
    dispatcher.start()
    for n in range(6):  # one running, five waiting
        dispatcher.submit(request("a", f"a{n}"))
        if n == 0:
            wait_until(lambda: fake.started == ["a0"])
    with pytest.raises(RateLimitedError) as refused:
        dispatcher.submit(request("a", "a6"))
    assert "max_queued" in str(refused.value) and "'a'" in str(refused.value)
    assert refused.value.retry_after == 3.0
    for n in range(5):
        dispatcher.submit(request("b", f"b{n}"))  # none refused
    wait_until(lambda: "b0" in fake.started)
    fake.release_all()
    dispatcher.drain(timeout=10)
    assert Counter(code[0] for code in fake.finished) == {"a": 6, "b": 5}


def test_a_principal_over_its_fair_share_is_refused_first(fake: FakeController) -> None:
    # Big quotas of their own; the fair share still keeps room for the others.
    dispatcher = Dispatcher(fake, workers=1, queue_size=20,
                            quota_of=lambda name: (None, 100))
    dispatcher.start()
    for n in range(10):
        dispatcher.submit(request("a", f"a{n}"))  # alone: its own quota is all that counts
    dispatcher.submit(request("b", "b0"))  # a newcomer always finds room
    with pytest.raises(RateLimitedError, match="fair share"):
        dispatcher.submit(request("a", "a10"))
    for n in range(1, 7):  # b up to an equal share: 21 // (1 other + 2) = 7
        dispatcher.submit(request("b", f"b{n}"))
    with pytest.raises(RateLimitedError, match="fair share"):
        dispatcher.submit(request("b", "b7"))
    fake.release_all()
    dispatcher.drain(timeout=10)


def test_the_whole_capacity_stays_a_hard_bound(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=1, queue_size=2,
                            quota_of=lambda name: (None, 100))
    dispatcher.start()
    for name in ("a", "b", "c"):
        dispatcher.submit(request(name, name))
    with pytest.raises(OverloadedError, match="the run queue is full"):
        dispatcher.submit(request("d", "d"))
    fake.release_all()
    dispatcher.drain(timeout=10)


def test_an_early_refusal_is_what_submit_would_answer_and_takes_nothing(
        fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=1, queue_size=3, max_queued=2, retry_after=3.0)
    dispatcher.refuse_early("a")  # nobody there yet: room
    assert dispatcher._tenants == {} and dispatcher._held == 0
    dispatcher.start()
    dispatcher.submit(request("a", "a0"))
    wait_until(lambda: fake.started == ["a0"])
    for n in (1, 2):
        dispatcher.refuse_early("a")
        dispatcher.submit(request("a", f"a{n}"))
    held = dispatcher._held
    with pytest.raises(RateLimitedError) as early:
        dispatcher.refuse_early("a")
    with pytest.raises(RateLimitedError) as late:
        dispatcher.submit(request("a", "a3"))
    assert str(early.value) == str(late.value) and "max_queued" in str(early.value)
    assert early.value.retry_after == late.value.retry_after == 3.0
    dispatcher.refuse_early("b")  # another principal still finds its room
    dispatcher.submit(request("b", "b0"))
    with pytest.raises(OverloadedError, match="the run queue is full"):
        dispatcher.refuse_early("c")  # 1 + 3 places, all taken
    assert dispatcher._held == held + 1 and "c" not in dispatcher._tenants
    fake.release_all()
    dispatcher.drain(timeout=10)
    with pytest.raises(UnavailableError):
        dispatcher.refuse_early("a")


def test_an_early_refusal_never_outlives_a_raised_quota(
        fake: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    quotas = {"a": 1}
    dispatcher = Dispatcher(fake, workers=1, queue_size=8,
                            quota_of=lambda name: (None, quotas.get(name)))
    dispatcher.start()
    dispatcher.submit(request("a", "a0"))
    wait_until(lambda: fake.started == ["a0"])
    dispatcher.submit(request("a", "a1"))  # its one waiting place
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.refuse_early("a")
    quotas["a"] = 5  # raised while its requests are refused early
    monkeypatch.setattr(dispatcher_module, "SHARE_FRESH_S", 0.0)  # the share read has aged
    dispatcher.refuse_early("a")  # left to submit, which reads the quota afresh
    dispatcher.submit(request("a", "a2"))
    monkeypatch.undo()
    dispatcher.refuse_early("a")  # and the share it read is the new one
    fake.release_all()
    dispatcher.drain(timeout=10)


def test_a_hold_is_a_place_until_submit_uses_it_or_it_is_let_go(
        fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=1, queue_size=3, max_queued=2)
    first = dispatcher.hold("a")  # a newcomer: judged by the capacity alone
    assert dispatcher._held == 1 and dispatcher._tenants["a"].reserved == 1
    dispatcher.submit(request("a", "a0"), hold=first)  # the hold becomes its place
    assert dispatcher._held == 1 and dispatcher._tenants["a"].queued == 1
    dispatcher.let_go(first)  # used: nothing to give back
    assert dispatcher._held == 1
    second = dispatcher.hold("a")  # its share now read: one more waiting place
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.hold("a")  # judged against the hold in flight, before any body is read
    dispatcher.let_go(second)  # its request went away
    dispatcher.let_go(second)
    assert dispatcher._held == 1
    third = dispatcher.hold("a")
    dispatcher.let_go(third)  # let go first (a client gone), then submit runs all the same:
    dispatcher.submit(request("a", "a1"), hold=third)  # a place of its own, judged anew
    assert dispatcher._held == 2 and dispatcher._tenants["a"].queued == 2
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.hold("a")
    dispatcher.start()
    fake.release_all()
    dispatcher.drain(timeout=10)
    assert dispatcher._held == 0 and dispatcher._tenants == {}


def test_a_hold_taken_on_an_old_share_is_judged_again_by_submit(
        fake: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    quotas = {"a": 4}
    dispatcher = Dispatcher(fake, workers=1, queue_size=8,
                            quota_of=lambda name: (None, quotas.get(name)))
    dispatcher.submit(request("a", "a0"))
    monkeypatch.setattr(dispatcher_module, "SHARE_FRESH_S", 0.0)
    # The share read has aged: one hold is judged by the room alone, the others by the
    # share as last read (four waiting places: a0 and three holds).
    holds = [dispatcher.hold("a") for _ in range(3)]
    assert [hold.unjudged for hold in holds] == [True, False, False]
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.hold("a")
    quotas["a"] = 1  # lowered meanwhile
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.submit(request("a", "a1"), hold=holds[0])
    assert dispatcher._held == 3  # its place went back; the other two requests still hold
    for hold in holds:
        dispatcher.let_go(hold)
    assert dispatcher._held == 1
    dispatcher.start()
    fake.release_all()
    dispatcher.drain(timeout=10)


def test_a_principal_new_to_the_queue_is_held_to_its_own_quota_from_its_head(
        fake: FakeController) -> None:
    """Before its first submit reads its share, what its key said (its own quota) bounds its
    holds, not the default: an admin's lower quota holds for heads whose bodies never come."""
    dispatcher = Dispatcher(fake, workers=1, queue_size=8)  # the default: 4 waiting
    first = dispatcher.hold("a", (None, 1))  # a share not yet read: judged by the room alone
    with pytest.raises(RateLimitedError, match=r"its max_queued quota \(1\)"):
        dispatcher.hold("a", (None, 1))
    dispatcher.let_go(first)
    assert dispatcher._held == 0 and dispatcher._tenants == {}


def test_workers_take_turns_round_robin(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=1, queue_size=10)
    dispatcher.start()
    dispatcher.submit(request("a", "a0"))
    wait_until(lambda: fake.started == ["a0"])
    for name, code in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("b", "b2"),
                       ("c", "c1")]:
        dispatcher.submit(request(name, code))
    order = ["a0", "a1", "b1", "c1", "a2", "b2", "a3"]
    for index, code in enumerate(order):
        wait_until(grown_to(fake.started, index + 1))
        assert fake.started[-1] == code, fake.started
        fake.release(code)
    dispatcher.drain(timeout=10)
    assert fake.finished == order


def test_the_running_quota_holds_and_leaves_workers_to_others(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=4, queue_size=20,
                            quota_of=lambda name: (2, None) if name == "a" else (None, None))
    dispatcher.start()
    for n in range(6):
        dispatcher.submit(request("a", f"a{n}"))
    wait_until(lambda: len(fake.started) == 2)
    time.sleep(0.1)  # two workers idle, and still none takes a third of a's
    assert sorted(fake.started) == ["a0", "a1"]  # taken at once by two workers: any order
    dispatcher.submit(request("b", "b0"))
    wait_until(lambda: "b0" in fake.started)  # at once, beside a's two
    fake.release("a0")
    wait_until(lambda: len(fake.started) == 4)
    assert fake.started[-1] == "a2"
    fake.release_all()
    dispatcher.drain(timeout=10)
    assert fake.peak["a"] == 2
    assert len(fake.finished) == 7


def test_drain_runs_what_is_queued_then_ends_every_worker(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=3, queue_size=20,
                            quota_of=lambda name: (1, None))
    dispatcher.start()
    for n in range(4):  # one at a time: the other workers wait while a's backlog is held
        dispatcher.submit(request("a", f"a{n}"))
    dispatcher.submit(request("b", "b0"))
    wait_until(lambda: len(fake.started) == 2)
    threading.Timer(0.2, fake.release_all).start()
    dispatcher.drain(timeout=10)
    assert not any(thread.is_alive() for thread in dispatcher._threads)
    assert sorted(fake.finished) == ["a0", "a1", "a2", "a3", "b0"]
    with pytest.raises(UnavailableError):
        dispatcher.submit(request("b", "late"))


def test_drain_of_an_idle_dispatcher_ends_every_worker(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=4)
    dispatcher.start()
    dispatcher.drain(timeout=5)
    assert not any(thread.is_alive() for thread in dispatcher._threads)


def test_places_are_given_back_on_exceptions_and_repeats(fake: FakeController) -> None:
    fake.instant = frozenset({"a"})
    fake.fail_accept = {"bad-accept"}
    fake.fail_process = {"bad-run"}
    dispatcher = Dispatcher(fake, workers=1, queue_size=3, max_queued=3)
    dispatcher.start()
    for _ in range(5):
        with pytest.raises(InputError):
            dispatcher.submit(request("a", "bad-accept"))
        dispatcher.submit(request("a", "bad-run"))
        first = dispatcher.submit(request("a", "keyed"), ("k", "digest"))
        assert dispatcher.submit(request("a", "keyed"), ("k", "digest")).id == first.id
        wait_until(lambda: fake.finished.count("bad-run") >= 1)
        wait_until(lambda: dispatcher._held == 0)
        fake.finished.clear()
    assert dispatcher._tenants == {}  # nothing kept for a principal holding nothing
    assert [thread.is_alive() for thread in dispatcher._threads] == [True]
    dispatcher.drain(timeout=5)


def test_an_approved_run_is_queued_in_its_agents_share(fake: FakeController) -> None:
    dispatcher = Dispatcher(fake, workers=1, queue_size=3, max_queued=1)
    dispatcher.start()
    parked, _ = fake.accept_once(request("a", "parked"))
    dispatcher.submit(request("a", "a0"))
    wait_until(lambda: fake.started == ["a0"])
    dispatcher.submit(request("a", "a1"))  # a's quota of waiting ones is now full
    with pytest.raises(RateLimitedError, match="max_queued"):
        dispatcher.submit(request("a", "a2"))
    approved = dispatcher.approve(parked.id, "carol", True, "fine")  # the approver decided
    assert approved.state is State.RUNNING
    dispatcher.submit(request("b", "b0"))
    with pytest.raises(OverloadedError, match="the run queue is full"):
        dispatcher.approve(parked.id, "carol", True, "again")
    assert dispatcher.approve(parked.id, "carol", False, "no").state is State.DENIED
    fake.release_all()
    dispatcher.drain(timeout=10)
    assert sorted(fake.finished) == ["a0", "a1", "b0", "parked"]


def test_concurrent_submissions_of_one_principal_count_once_each(fake: FakeController) -> None:
    # 25 distinct keys, 8 requests each, at once: only real submissions count against the
    # quota of 25, so no request is refused.
    dispatcher = Dispatcher(fake, workers=1, queue_size=60, max_queued=25)
    dispatcher.start()

    def post(n: int) -> str:
        return dispatcher.submit(request("a", f"k{n % 25}"), (f"k{n % 25}", "d")).id

    with ThreadPoolExecutor(max_workers=40) as pool:
        ids = list(pool.map(post, range(200)))
    assert len(set(ids)) == 25
    fake.release_all()
    dispatcher.drain(timeout=10)
    assert len(fake.finished) == 25


OLD_PRINCIPALS = """
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO principals VALUES ('old', 'agent', 'ab', '2025-01-01T00:00:00+00:00', NULL);
"""


def old_database(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(OLD_PRINCIPALS)
    db.close()
    return path


def test_quotas_are_kept_per_principal(tmp_path: Path) -> None:
    principals = Principals(tmp_path / "p.db")
    principals.add("greedy", Role.AGENT, Quota(max_queued=4))
    principals.add("plain", Role.AGENT)
    assert principals.quota("greedy") == Quota(None, 4)
    assert principals.quota("plain") == Quota() == principals.quota("nobody")
    principals.set_quota("plain", Quota(2, None))
    assert principals.quotas() == {"greedy": Quota(None, 4), "plain": Quota(2, None)}
    with pytest.raises(NotFoundError):
        principals.set_quota("nobody", Quota(1, 1))
    for bad in (Quota(0, None), Quota(None, -1), Quota(None, 10**6)):
        with pytest.raises(InputError, match="between 1 and"):
            principals.set_quota("plain", bad)
    # What the dispatcher makes of them: its defaults where a principal has none.
    dispatcher = Dispatcher(FakeController(), workers=4, queue_size=64,
                            quota_of=principals.quota)
    assert dispatcher.share_of("greedy") == Share(2, 4)
    assert dispatcher.share_of("plain") == Share(2, 32)


def test_an_old_principals_table_gets_its_quota_columns_in_place(tmp_path: Path) -> None:
    path = old_database(tmp_path / "p.db")
    principals = Principals(path)
    assert principals.quota("old") == Quota()
    principals.set_quota("old", Quota(1, 2))
    principals.add("new", Role.AGENT, Quota(3, None))
    principals.close()
    again = Principals(path)  # a second opening finds nothing to do
    assert again.quotas() == {"old": Quota(1, 2), "new": Quota(3, None)}
    assert [p.name for p in again.list()] == ["new", "old"]


def test_processes_opening_an_old_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = old_database(tmp_path / "p.db")
    code = ("import sys; from pathlib import Path; "
            "from controller.adapters.store.principals import Principals; "
            "print(Principals(Path(sys.argv[1])).quota('old'))")
    processes = [subprocess.Popen([sys.executable, "-c", code, str(path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out.strip() == "Quota(max_running=None, max_queued=None)"
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(principals)")]
    db.close()
    assert columns[-2:] == ["max_running", "max_queued"] and len(columns) == 7


def test_the_cli_sets_and_shows_quotas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SANDGATE_DATA_DIR", str(tmp_path))
    assert main(["principals", "add", "a", "--max-queued", "5"]) == 0
    assert main(["principals", "quota", "a", "--max-running", "2"]) == 0
    assert Principals(tmp_path / "sandgate.db").quota("a") == Quota(2, 5)  # kept max_queued
    assert main(["principals", "quota", "a", "--max-queued", "default"]) == 0
    capsys.readouterr()
    assert main(["principals", "list"]) == 0
    assert "max_running=2 max_queued=default" in capsys.readouterr().out
    assert main(["principals", "quota", "a", "--max-running", "many"]) == 2
    assert main(["principals", "quota", "a", "--max-running", "0"]) == 2
    assert main(["principals", "quota", "ghost", "--max-running", "1"]) == 2
    assert Principals(tmp_path / "sandgate.db").quota("a") == Quota(2, None)
