"""The run queue: bounded, with a fixed number of sandbox workers.

Capacity is taken *before* a submission is recorded, so a refusal (429) loses nothing and a
202 always means the submission is on disk and will be driven to a terminal state (by a
worker, or by reconciliation after a crash).
"""

from __future__ import annotations

import logging
import queue
import threading

from controller.errors import OverloadedError, UnavailableError
from controller.models import State, Submission, SubmissionRequest
from controller.service import Controller

log = logging.getLogger("sandgate.dispatcher")


class Dispatcher:
    """Accepts submissions within capacity and drives them on worker threads."""

    def __init__(self, controller: Controller, *, workers: int = 4, queue_size: int = 64,
                 retry_after: float = 2.0, approval_ttl_s: float = 3600.0) -> None:
        self.controller = controller
        self.workers = workers
        self.retry_after = retry_after
        self.approval_ttl_s = approval_ttl_s
        self._slots = threading.BoundedSemaphore(workers + queue_size)
        self._queue: queue.Queue[Submission | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._draining = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"sandgate-worker-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        self._sweeper = threading.Thread(target=self._sweep, name="sandgate-approvals",
                                         daemon=True)
        self._sweeper.start()

    def approve(self, submission_id: str, approver: str, approve: bool,
                reason: str) -> Submission:
        """Record an approval answer; an approved submission's real run is queued at once."""
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("the run queue is full", retry_after=self.retry_after)
        try:
            answered = self.controller.approve(submission_id, approver, approve, reason)
        except BaseException:
            self._slots.release()
            raise
        if answered.state is not State.RUNNING:
            self._slots.release()
            return answered
        self._queue.put(answered)
        return answered

    def _sweep(self) -> None:
        """Expire unanswered approval requests (checked a few times per time-to-live)."""
        interval = min(5.0, self.approval_ttl_s / 4)
        while not self._draining.wait(interval):
            try:
                self.controller.expire_approvals(self.approval_ttl_s)
            except Exception:
                log.exception("could not expire approval requests; will retry")

    def submit(self, request: SubmissionRequest,
               idempotency: tuple[str, str] | None = None) -> Submission:
        """Record and enqueue; an idempotent repeat returns the first submission as it is."""
        if self.draining:
            raise UnavailableError("the controller is shutting down and accepts no new work",
                                   retry_after=self.retry_after)
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("the run queue is full", retry_after=self.retry_after)
        try:
            submission, created = self.controller.accept_once(request, idempotency)
        except BaseException:
            self._slots.release()
            raise
        if not created:
            self._slots.release()  # a repeat: the first request queued it already
            return submission
        self._queue.put(submission)
        return submission

    def drain(self, timeout: float = 60.0) -> None:
        """Stop accepting, let the workers finish what is queued and running, then stop."""
        self._draining.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _work(self) -> None:
        while True:
            submission = self._queue.get()
            if submission is None:
                return
            try:
                self.controller.process(submission)
            except Exception:
                # process() already ended the submission safely if it could; what is left is
                # for reconciliation at the next start. The worker must live on.
                log.exception("worker could not finish %s", submission.id)
            finally:
                self._slots.release()
