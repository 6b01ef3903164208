"""What the store syncs to disk: a submission's record when it is received, when it moves to
committing (a publication follows) or awaits or gets a human's answer, and when it ends with
its receipt; every other write is atomic and ordered, and synced with the next of those."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controller.adapters.runtime.fake import FakeRuntime
from controller.adapters.store.submissions import Store
from controller.core.models import State
from tests.conftest import bundle_with, make_controller, parking_rule, python


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """(durable, PRAGMA synchronous inside) for every write transaction."""
    seen: list[tuple[bool, int]] = []
    original = Store._transaction

    @contextmanager
    def recording(self: Store, *, durable: bool = False) -> Iterator[object]:
        with original(self, durable=durable) as db:
            seen.append((durable, int(db.execute("PRAGMA synchronous").fetchone()[0])))
            yield db

    monkeypatch.setattr(Store, "_transaction", recording)
    return seen


def test_a_committed_submission_is_synced_three_times(tmp_path: Path,
                                                      synced: list[tuple[bool, int]]) -> None:
    controller = make_controller(tmp_path, FakeRuntime())
    synced.clear()
    result = controller.submit(python("print(1)"))
    assert result.state is State.COMMITTED
    assert sum(durable for durable, _ in synced) == 3  # received, committing, committed
    assert all(level == (2 if durable else 1) for durable, level in synced)  # FULL, NORMAL
    assert len(synced) > 6  # the other moves and writes, unsynced
    with controller.store._transaction() as db:  # back to NORMAL after a durable one
        assert int(db.execute("PRAGMA synchronous").fetchone()[0]) == 1


def test_a_human_s_question_and_answer_are_synced(tmp_path: Path,
                                                   synced: list[tuple[bool, int]]) -> None:
    controller = make_controller(tmp_path, FakeRuntime(),
                                 policy_dir=bundle_with(tmp_path, "parks", parking_rule(-1)))
    parked = controller.submit(python("print(1)"))
    assert parked.state is State.AWAITING_APPROVAL
    synced.clear()
    controller.approve(parked.id, "carol", True, "fine")
    assert synced == [(True, 2)]
