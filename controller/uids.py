"""Sandbox uids: each submission in flight runs as a uid no other submission in flight has.

The kernel's seccomp kill records name a uid and a host pid; a pid sampled from a cgroup
misses children that live a few milliseconds, the uid does not. With a uid per submission,
a tripwire is charged to the run that fired it and never to another tenant's run at the same
time; per-uid kernel accounting (RLIMIT_NPROC, message queues, keyrings) is not shared either.
Both runs of a submission (and a real run resumed after an approval) keep the same uid, so
nothing in its world tells the rehearsal from the real thing.
"""

from __future__ import annotations

import secrets
import threading

from controller.errors import RuntimeUnavailableError
from controller.ports import SUBMISSION_UIDS


class UidPool:
    """Which submission holds which uid, in this controller process."""

    def __init__(self, uids: range = SUBMISSION_UIDS) -> None:
        self._uids = uids
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, submission_id: str, wanted: int | None = None) -> int:
        """The uid of ``submission_id``: the one it holds, else ``wanted`` (its recorded uid)
        if no other submission holds it, else a free one chosen at random (two controllers
        sharing an engine rarely meet). Raises ``RuntimeUnavailableError`` when ``wanted``
        is taken or none is free."""
        with self._lock:
            if submission_id in self._held:
                return self._held[submission_id]
            taken = set(self._held.values())
            if wanted is not None:
                if wanted in taken:
                    raise RuntimeUnavailableError(
                        f"sandbox uid {wanted} of submission {submission_id} is held by "
                        "another submission")
                uid = wanted
            else:
                free = [uid for uid in self._uids if uid not in taken]
                if not free:
                    raise RuntimeUnavailableError(
                        f"no sandbox uid is free: {len(self._held)} submissions are in flight")
                uid = secrets.choice(free)
            self._held[submission_id] = uid
            return uid

    def release(self, submission_id: str) -> None:
        with self._lock:
            self._held.pop(submission_id, None)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)
