"""The reaper: removals off the runs' path, in order, none lost to a failing one or to the
thread ending between two of them."""

from __future__ import annotations

import threading
import time

import pytest

from controller.adapters.runtime import reaper as reaper_module
from controller.adapters.runtime.reaper import Reaper


def test_removals_run_in_order_and_settle_waits_for_them() -> None:
    reaper = Reaper()
    done: list[object] = []
    gate = threading.Event()

    def first() -> None:
        gate.wait(5)
        done.append(0)

    reaper.put(first)
    for n in range(1, 5):
        reaper.put(lambda n=n: done.append(n))  # type: ignore[misc]
    assert reaper.pending == 5 and not reaper.settle(timeout=0.05)  # held up by the first
    gate.set()
    assert reaper.settle(timeout=5)
    assert done == [0, 1, 2, 3, 4] and reaper.pending == 0


def test_a_failing_removal_is_logged_and_the_next_ones_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    reaper = Reaper()
    done: list[object] = []

    def fails() -> None:
        raise RuntimeError("the engine went away")

    reaper.put(fails)
    reaper.put(lambda: done.append("after"))
    assert reaper.settle(timeout=5)
    assert done == ["after"]
    assert "left to the next reconcile" in caplog.text and "the engine went away" in caplog.text


def test_work_handed_over_as_the_idle_thread_ends_is_not_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper_module, "IDLE_S", 0.001)
    reaper = Reaper()
    done: list[object] = []
    for n in range(200):  # the thread ends and starts again many times meanwhile
        reaper.put(lambda n=n: done.append(n))  # type: ignore[misc]
        if n % 7 == 0:
            time.sleep(0.002)
    assert reaper.settle(timeout=10)
    assert done == list(range(200))
