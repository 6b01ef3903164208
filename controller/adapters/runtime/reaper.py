"""Removing ended sandboxes off the path of the runs that used them.

A run's result is known once its container has stopped and been inspected; removing the
container (and its run parent cgroup) costs the engine a few more milliseconds that no
submission needs to wait for. ``Reaper`` does those removals in order on a thread of its own
(started when there is work); a process waits for them before it exits, and what a crash
leaves is the next start's reconcile to remove, as it always was.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_S = 5.0  # how long the thread waits for more work before it ends
EXIT_WAIT_S = 60.0  # at most, for the removals still to do when the process exits


class Reaper:
    """Runs removals handed to it, one at a time, in order (see the module's docstring)."""

    def __init__(self, name: str = "sandgate-reaper") -> None:
        self.name = name
        self._work: deque[Callable[[], None]] = deque()
        self._changed = threading.Condition()
        self._pending = 0  # handed over and not yet done
        self._thread: threading.Thread | None = None
        self._at_exit = False

    def put(self, removal: Callable[[], None]) -> None:
        with self._changed:
            self._work.append(removal)
            self._pending += 1
            if not self._at_exit:
                atexit.register(self.settle, EXIT_WAIT_S)
                self._at_exit = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until every removal handed over is done; whether they all were in time."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)

    @property
    def pending(self) -> int:
        with self._changed:
            return self._pending

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._changed.wait_for(lambda: bool(self._work), IDLE_S):
                    self._thread = None  # under the lock: a put() now starts another
                    return
                removal = self._work.popleft()
            try:
                removal()
            except Exception:
                log.exception("could not remove an ended sandbox; it is left to the next "
                              "reconcile (at start-up)")
            finally:
                with self._changed:
                    self._pending -= 1
                    self._changed.notify_all()
