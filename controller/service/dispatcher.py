"""The run queue: bounded, shared fairly between principals, with a fixed number of sandbox
workers.

Capacity is taken *before* a submission is recorded, so a refusal (429) loses nothing and a
202 always means the submission is on disk and will be driven to a terminal state (by a
worker, or by reconciliation after a crash).

Each principal (the submitting agent) has a FIFO queue of its own, and the workers serve the
queues round-robin: another tenant's submission runs next, not behind a greedy tenant's
backlog. What one principal may hold is bounded three ways (beyond, ``RateLimitedError``: 429 +
Retry-After, a message naming the bound; a full queue is ``OverloadedError``, 503):

- ``max_running``: how many of its submissions run at once; the other workers stay free for
  everyone else (default: half the workers, rounded up);
- ``max_queued``: how many may wait (default: half the queue, rounded up);
- while other principals hold work too, an equal share of the whole capacity
  (``workers + queue_size``), one share being kept for a principal not yet there: the greedy
  tenant's overflow is refused first, and a newcomer finds room.

The whole capacity stays a hard bound. One principal's admissions are taken one at a time (the
store writes one at a time anyway), so its requests in flight, idempotent repeats among them,
never count against its quota all at once.

The service takes a submission's place from its request's head (``hold``), before the body is
read: a thousand POSTs arriving together are then judged against each other as they arrive,
not all let through to read their bodies and be refused by ``submit`` one thread at a time.
``submit`` turns the hold into the submission's place (judged again, by the share read
afresh), and the service lets go of a hold its request did not use.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from controller.core.models import State, Submission, SubmissionRequest
from controller.errors import OverloadedError, RateLimitedError, UnavailableError

log = logging.getLogger("sandgate.dispatcher")
SHARE_FRESH_S = 1.0  # how long an early refusal trusts a principal's share as last read

# A principal's own quota, (max_running, max_queued); None where the default applies.
QuotaOf = tuple[int | None, int | None]
QuotaLookup = Callable[[str], QuotaOf]


class Owners(Protocol):
    def owner_of(self, submission_id: str) -> tuple[str, str] | None: ...


class Runner(Protocol):
    """What the dispatcher asks of the controller (``service.controller.Controller``)."""

    @property
    def store(self) -> Owners: ...

    def accept_once(self, request: SubmissionRequest,
                    idempotency: tuple[str, str] | None = None) -> tuple[Submission, bool]: ...

    def process(self, submission: Submission) -> Submission: ...

    def approve(self, submission_id: str, approver: str, approve: bool,
                reason: str) -> Submission: ...

    def expire_approvals(self, ttl_s: float) -> list[Submission]: ...


class Share(NamedTuple):
    """What one principal may hold of the run queue."""

    max_running: int
    max_queued: int


class Load(NamedTuple):
    """The run queue now: submissions waiting (admitted, not started) and running, of how
    many places in all, held by how many principals."""

    waiting: int
    running: int
    capacity: int
    principals: int


@dataclass(eq=False)
class _Tenant:
    """One principal's part of the queue, kept while it holds work or is being admitted."""

    name: str
    share: Share
    waiting: deque[Submission] = field(default_factory=deque)
    reserved: int = 0  # admitted, being recorded
    running: int = 0
    entered: int = 0  # submit/approve calls under way for this principal
    unjudged: int = 0  # holds taken without its share (at most one at a time)
    admission: threading.Lock = field(default_factory=threading.Lock)
    share_at: float = field(default_factory=time.monotonic)  # when ``share`` was read

    @property
    def queued(self) -> int:
        return self.reserved + len(self.waiting)

    @property
    def held(self) -> int:
        return self.queued + self.running


@dataclass(eq=False)
class Hold:
    """A place in the run queue taken for a submission from its request's head: ``submit``
    uses it, else ``let_go`` gives it back; whichever comes first, once."""

    tenant: _Tenant
    unjudged: bool = False  # taken on a share read too long ago: judged by the room alone
    over: bool = False


class Dispatcher:
    """Accepts submissions within each principal's share and drives them on worker threads."""

    def __init__(self, controller: Runner, *, workers: int = 4, queue_size: int = 64,
                 retry_after: float = 2.0, approval_ttl_s: float = 3600.0,
                 max_running: int | None = None, max_queued: int | None = None,
                 quota_of: QuotaLookup | None = None) -> None:
        self.controller = controller
        self.workers = workers
        self.capacity = workers + queue_size
        self.retry_after = retry_after
        self.approval_ttl_s = approval_ttl_s
        self.default_share = Share(
            max_running=max_running if max_running is not None else math.ceil(workers / 2),
            max_queued=max_queued if max_queued is not None else max(1, math.ceil(
                queue_size / 2)))
        self._quota_of = quota_of
        self._changed = threading.Condition()
        self._tenants: dict[str, _Tenant] = {}
        self._turns: OrderedDict[str, _Tenant] = OrderedDict()  # work waiting, next turn first
        self._held = 0
        self._threads: list[threading.Thread] = []
        self._draining = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def load(self) -> Load:
        """How full the run queue is now."""
        with self._changed:
            tenants = list(self._tenants.values())
            return Load(waiting=sum(tenant.queued for tenant in tenants),
                        running=sum(tenant.running for tenant in tenants),
                        capacity=self.capacity, principals=len(tenants))

    def share_of(self, principal: str) -> Share:
        """The principal's share: its own quota where it has one, else the defaults."""
        return self._share(*(self._quota_of(principal) if self._quota_of else (None, None)))

    def _share(self, running: int | None, queued: int | None) -> Share:
        default = self.default_share
        return Share(max_running=max(1, running) if running is not None else default.max_running,
                     max_queued=max(1, queued) if queued is not None else default.max_queued)

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"sandgate-worker-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        self._sweeper = threading.Thread(target=self._sweep, name="sandgate-approvals",
                                         daemon=True)
        self._sweeper.start()

    def submit(self, request: SubmissionRequest,
               idempotency: tuple[str, str] | None = None, hold: Hold | None = None
               ) -> Submission:
        """Record and enqueue; an idempotent repeat returns the first submission as it is.
        ``hold``: the place its request's head took for it (``hold``), if any."""
        if self.draining:
            raise self._refusal_draining()
        share = self.share_of(request.agent)
        with self._entered(request.agent, share) as tenant, tenant.admission:
            self._reserve(tenant, own_share=True, hold=hold)
            try:
                submission, created = self.controller.accept_once(request, idempotency)
            except BaseException:
                self._release(tenant)
                raise
            if created:
                self._enqueue(tenant, submission)
            else:
                self._release(tenant)  # a repeat: the first request queued it already
            return submission

    def approve(self, submission_id: str, approver: str, approve: bool,
                reason: str) -> Submission:
        """Record an approval answer; an approved submission's real run is queued at once, in
        its agent's share (past the agent's own quota of waiting ones: the approver decided,
        but within the whole capacity). A rejection takes no capacity."""
        found = self.controller.store.owner_of(submission_id) if approve else None
        if found is None:  # a rejection, or no such submission (approve() says so)
            return self.controller.approve(submission_id, approver, approve, reason)
        agent = found[0]
        with self._entered(agent, self.share_of(agent)) as tenant:
            self._reserve(tenant, own_share=False)
            try:
                answered = self.controller.approve(submission_id, approver, approve, reason)
            except BaseException:
                self._release(tenant)
                raise
            if answered.state is State.RUNNING:
                self._enqueue(tenant, answered)
            else:
                self._release(tenant)
            return answered

    def drain(self, timeout: float = 60.0) -> None:
        """Stop accepting, let the workers finish what is queued and running, then stop."""
        with self._changed:
            self._draining.set()
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _sweep(self) -> None:
        """Expire unanswered approval requests (checked a few times per time-to-live)."""
        interval = min(5.0, self.approval_ttl_s / 4)
        while not self._draining.wait(interval):
            try:
                self.controller.expire_approvals(self.approval_ttl_s)
            except Exception:
                log.exception("could not expire approval requests; will retry")

    @contextmanager
    def _entered(self, principal: str, share: Share) -> Iterator[_Tenant]:
        """The principal's part of the queue (made if it has none), kept while in use."""
        with self._changed:
            tenant = self._tenants.get(principal)
            if tenant is None:
                tenant = self._tenants[principal] = _Tenant(principal, share)
            tenant.share, tenant.share_at = share, time.monotonic()
            tenant.entered += 1
        try:
            yield tenant
        finally:
            with self._changed:
                tenant.entered -= 1
                self._forget_if_idle(tenant)

    def refuse_early(self, principal: str, quota: QuotaOf = (None, None)) -> None:
        """Raise what ``submit`` would refuse ``principal``'s next submission with now, taking
        nothing (``hold`` without the hold)."""
        self.let_go(self.hold(principal, quota))

    def hold(self, principal: str, quota: QuotaOf = (None, None)) -> Hold:
        """Take a place for ``principal``'s next submission, or raise what ``submit`` would
        refuse it with now: a request the queue has no room for is answered before its body
        is read or a thread is taken for it. The place counts against the principal's share
        until ``submit`` uses it (and judges it again) or ``let_go`` returns it. ``quota``:
        its own (max_running, max_queued) as read with its key: its share while it has no
        part of the queue (``submit`` reads it again)."""
        with self._changed:
            tenant = self._tenants.get(principal)
            if tenant is None:
                tenant = self._tenants[principal] = _Tenant(principal, self._share(*quota),
                                                            share_at=-math.inf)
            # A share read long ago may be a quota since raised: then one hold at a time is
            # judged by the room alone, and submit, which reads the share afresh, judges it.
            # The others are judged by the share as last read (or as its key said): holds
            # whose bodies never come cannot take the places kept for other principals.
            fresh = time.monotonic() - tenant.share_at < SHARE_FRESH_S
            unjudged = not fresh and tenant.unjudged == 0
            try:
                self._check_room(tenant, own_share=not unjudged)
            except BaseException:
                self._forget_if_idle(tenant)
                raise
            tenant.reserved += 1
            tenant.unjudged += unjudged
            self._held += 1
            return Hold(tenant, unjudged=unjudged)

    def let_go(self, hold: Hold) -> None:
        """Give back a hold ``submit`` did not use (once; nothing if it did)."""
        with self._changed:
            if hold.over:
                return
            self._close(hold)
        self._release(hold.tenant)

    def _close(self, hold: Hold) -> None:
        """The hold is used or let go. Called holding ``_changed``."""
        hold.over = True
        hold.tenant.unjudged -= hold.unjudged

    def _reserve(self, tenant: _Tenant, *, own_share: bool, hold: Hold | None = None) -> None:
        """Take one place for ``tenant`` before its submission is recorded, or refuse; a hold
        of its (not let go) becomes that place if it is still within the room and share."""
        with self._changed:
            if hold is not None and not hold.over and hold.tenant is tenant:
                self._close(hold)
                tenant.reserved -= 1  # judged as if it were not there, then taken again
                self._held -= 1
                try:
                    self._check_room(tenant, own_share=own_share)
                except BaseException:
                    self._forget_if_idle(tenant)
                    self._changed.notify_all()
                    raise
            else:
                self._check_room(tenant, own_share=own_share)
            tenant.reserved += 1
            self._held += 1

    def _check_room(self, tenant: _Tenant | None, *, own_share: bool) -> None:
        """Refuse unless the queue has a place for ``tenant`` (within its share if
        ``own_share``). Called holding ``_changed``."""
        if self.draining:
            raise self._refusal_draining()
        if own_share and tenant is not None:
            self._check_share(tenant)
        if self._held >= self.capacity:
            raise OverloadedError("the run queue is full", retry_after=self.retry_after)

    def _check_share(self, tenant: _Tenant) -> None:
        if tenant.queued >= tenant.share.max_queued:
            raise RateLimitedError(
                f"principal {tenant.name!r} already has {tenant.queued} submission(s) waiting, "
                f"its max_queued quota ({tenant.share.max_queued}); submit again when some "
                "have started", retry_after=self.retry_after)
        others = sum(1 for other in self._tenants.values()
                     if other is not tenant and other.held > 0)
        fair = max(1, self.capacity // (others + 2))
        if others and tenant.held >= fair:
            raise RateLimitedError(
                f"the run queue is shared by {others + 1} principals, and {tenant.name!r} "
                f"holds its fair share already ({tenant.held} of {self.capacity} places); "
                "submit again when some of its submissions have ended",
                retry_after=self.retry_after)

    def _release(self, tenant: _Tenant) -> None:
        with self._changed:
            tenant.reserved -= 1
            self._held -= 1
            self._forget_if_idle(tenant)
            self._changed.notify_all()  # a draining worker may be waiting for this one

    def _enqueue(self, tenant: _Tenant, submission: Submission) -> None:
        with self._changed:
            tenant.reserved -= 1
            tenant.waiting.append(submission)
            self._turns.setdefault(tenant.name, tenant)
            self._changed.notify_all()

    def _forget_if_idle(self, tenant: _Tenant) -> None:
        """Drop a principal's part once it holds nothing (memory stays bounded by the work
        in hand, not by how many principals ever submitted)."""
        if tenant.held == 0 and tenant.entered == 0:
            self._tenants.pop(tenant.name, None)

    def _next(self) -> tuple[_Tenant, Submission] | None:
        """The next submission, round-robin over the principals below their running quota."""
        for name, tenant in self._turns.items():
            if tenant.running < tenant.share.max_running:
                submission = tenant.waiting.popleft()
                tenant.running += 1
                if tenant.waiting:
                    self._turns.move_to_end(name)
                else:
                    del self._turns[name]
                return tenant, submission
        return None

    def _work(self) -> None:
        while True:
            with self._changed:
                while (taken := self._next()) is None:
                    if self.draining and not self._turns and not any(
                            tenant.reserved for tenant in self._tenants.values()):
                        return
                    self._changed.wait()
            tenant, submission = taken
            try:
                self.controller.process(submission)
            except Exception:
                # process() already ended the submission safely if it could; what is left is
                # for reconciliation at the next start. The worker must live on.
                log.exception("worker could not finish %s", submission.id)
            finally:
                with self._changed:
                    tenant.running -= 1
                    self._held -= 1
                    self._forget_if_idle(tenant)
                    self._changed.notify_all()

    def _refusal_draining(self) -> UnavailableError:
        return UnavailableError("the controller is shutting down and accepts no new work",
                                retry_after=self.retry_after)
