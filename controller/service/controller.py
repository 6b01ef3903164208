"""The controller: accepts submissions and drives each to its end through the ports.

Every move is persisted before the side effect it announces; every failure ends in the safe
terminal state for where the submission stood (``lifecycle.safe_terminal``), with its receipt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Generic, TypeVar

from controller.adapters.fs.trees import remove_tree
from controller.adapters.fs.workspaces import Workspaces
from controller.adapters.telemetry import logs
from controller.core import untrusted
from controller.core.lifecycle import TERMINAL, after_approval
from controller.core.models import Approval, State, Submission, SubmissionRequest, utcnow
from controller.core.ports import PolicyEngine, SandboxRuntime, Signer, SubmissionStore, Tmpfs
from controller.core.profile import Profile
from controller.errors import ForbiddenError, InputError, NotFoundError
from controller.faults import crash_point
from controller.profiles.load import archive_profile, load_profiles
from controller.service.means import Means, Paths, Rules
from controller.service.pipeline import Job
from controller.service.pool import Pool
from controller.service.sealing import Sealer
from controller.service.telemetry import Telemetry

log = logging.getLogger("sandgate")

Listener = Callable[[Submission], None]
POOL_DIR = "pool"  # under the runs directory: the pooled pairs' scratch directories
# The service holds its store and engine by their ports; the wiring (``bootstrap``, tests)
# knows which adapters they are, and reads views from them as such.
StoreT = TypeVar("StoreT", bound=SubmissionStore, covariant=True)
EngineT = TypeVar("EngineT", bound=PolicyEngine, covariant=True)


class Controller(Generic[StoreT, EngineT]):
    """Accepts submissions and drives them through the lifecycle, one call per submission."""

    def __init__(self, *, store: StoreT, runtime: SandboxRuntime, engine: EngineT,
                 signer: Signer, profiles: dict[str, Profile], workspaces: Workspaces,
                 tmpfs: Tmpfs, paths: Paths, rules: Rules | None = None,
                 owner: str = "sandgate", telemetry: Telemetry | None = None) -> None:
        self.store = store
        self.runtime = runtime
        self.engine = engine
        self.profiles = profiles
        self.workspaces = workspaces
        self.tmpfs = tmpfs
        self.paths = paths
        self.rules = rules or Rules()
        self.sealer = Sealer(store, signer, workspaces)
        self.telemetry = telemetry or Telemetry(store)  # metrics; traces only if given
        self.sealer.on_sealed = self.telemetry.sealed
        self.listeners: list[Listener] = []
        self.owner = owner  # the runtime's label too: what reconcile may remove is its own
        # Started only by a long-lived service (``start_pool``): a one-shot run keeps none.
        self._driving = 0  # submissions ``process`` drives now
        self._driving_lock = threading.Lock()
        self.pool = Pool(runtime, store, tmpfs, root=paths.runs / POOL_DIR, owner=owner,
                         profiles=lambda: self.profiles, busy=lambda: self._driving > 0)
        self.means = Means(store=store, runtime=runtime, engine=engine, workspaces=workspaces,
                           tmpfs=tmpfs, sealer=self.sealer, announce=self.announce,
                           paths=paths, rules=self.rules, telemetry=self.telemetry,
                           pool=self.pool)

    def job(self, submission: Submission) -> Job:
        """A job for ``submission`` under the profile it names as loaded now."""
        return Job(self.means, submission, self.profiles.get(submission.request.profile))

    def submit(self, request: SubmissionRequest) -> Submission:
        """Accept and process one submission in this thread; returns it in a terminal state."""
        return self.process(self.accept(request))

    def accept(self, request: SubmissionRequest) -> Submission:
        """Check what can be checked up front and record the submission as ``received``."""
        return self.accept_once(request)[0]

    def accept_once(self, request: SubmissionRequest,
                    idempotency: tuple[str, str] | None = None) -> tuple[Submission, bool]:
        """Like ``accept``; with (key, body digest), a repeat returns the first submission.

        Returns the submission and whether this call created it.
        """
        if request.profile not in self.profiles:
            raise InputError(f"profile: unknown profile {request.profile!r}; "
                             f"known: {', '.join(sorted(self.profiles))}")
        submission = Submission(
            id=uuid.uuid4().hex,
            # The agent's trace, continued; else one of its own.
            trace_id=request.trace_parent.trace_id if request.trace_parent else uuid.uuid4().hex,
            request=request,
            code_sha256=hashlib.sha256(request.code.encode()).hexdigest(),
        )
        recorded = self.store.insert(submission, idempotency)
        if recorded.id != submission.id:
            return recorded, False
        crash_point(State.RECEIVED.value)
        self.announce(submission)
        return submission, True

    def process(self, submission: Submission) -> Submission:
        """Drive a submission to its end: a new one from the start, an approved one from its
        real run."""
        job = self.job(submission)
        with self._driving_lock:
            self._driving += 1
        with logs.about(submission.id, submission.trace_id):
            try:
                return job.resume() if submission.state is State.RUNNING else job.drive()
            except Exception as exc:
                log.exception("submission %s failed in %s", job.sub.id, job.sub.state)
                return job.fail(f"{type(exc).__name__}: {exc}")
            finally:
                job.cleanup()
                with self._driving_lock:
                    self._driving -= 1
                self.pool.poke()

    def reconcile(self) -> list[Submission]:
        """After a restart: remove our containers (pooled ones too, and the uids they held),
        end every interrupted submission safely."""
        self.runtime.remove_owned()
        self.store.drop_uid_holds(self.owner)
        ended = []
        for submission in self.store.in_flight():  # parked ones hold nothing: left as they are
            # Each record on its own: one that cannot be ended is logged and left for the
            # next start, and never keeps the others (or the server) from starting.
            try:
                ended.append(self._end_interrupted(submission))
            except Exception:
                log.exception("submission %s: could not be reconciled; left in %s",
                              submission.id, submission.state)
        self._remove_stale_run_dirs()
        return ended

    def _end_interrupted(self, submission: Submission) -> Submission:
        job = self.job(submission)
        try:
            request = submission.request
            if submission.state is State.COMMITTING and submission.base_version is not None:
                current, space = self.store.open_workspace(request.agent, request.workspace)
                if current == submission.base_version:
                    self.workspaces.unpublish(space, current + 1)
            return job.fail(f"controller restarted while the submission was in "
                            f"{submission.state}")
        finally:
            job.cleanup()

    def _remove_stale_run_dirs(self) -> None:
        """Run directories of submissions that ended (a crash can come before the cleanup),
        their scratch filesystems released first."""
        if not self.paths.runs.is_dir():
            return
        for directory in self.paths.runs.iterdir():
            try:
                found = self.store.owner_of(directory.name)
                if found is None or State(found[1]) in TERMINAL:
                    self.tmpfs.release(directory)
                    if not self.rules.keep_run_dirs:
                        remove_tree(directory)
            except Exception:
                log.exception("run directory %s could not be removed; left for the next "
                              "start", directory.name)

    def reload_profiles(self, directory: Path) -> dict[str, Profile]:
        """Swap in every profile of ``directory`` at once; a broken one refuses them all
        (``ProfileError``) and the loaded ones stay. Submissions keep the profile they began
        with; the digest in each receipt says which."""
        with self.telemetry.reloading("profiles"):
            loaded = load_profiles(directory)
            self.archive_profiles(loaded)
        self.profiles = loaded
        return loaded

    def archive_profiles(self, profiles: dict[str, Profile]) -> None:
        if self.paths.profiles is not None:
            for profile in profiles.values():
                archive_profile(profile, self.paths.profiles)

    def approve(self, submission_id: str, approver: str, approve: bool,
                reason: str) -> Submission:
        """Record a human's answer: approved moves to ``running`` (the caller queues the real
        run), rejected ends ``denied``. The approver may not be the submitting agent."""
        found = self.store.get(submission_id)
        if found is None:
            raise NotFoundError(f"submission {untrusted.echo(submission_id)} not found")
        if found.state is not State.AWAITING_APPROVAL:
            raise InputError(f"submission {submission_id} is {found.state}, not awaiting "
                             "approval")
        if approver == found.request.agent:
            raise ForbiddenError("an agent cannot approve its own submission")
        approval = Approval(approver=approver, approve=approve, reason=reason,
                            radius_sha256=found.radius.digest if found.radius else None)
        verdict = "approved" if approve else "rejected"
        note = f"{verdict} by {approver}: {reason}"
        if after_approval(approval) is State.DENIED:
            return self.job(found).finish(State.DENIED, approval=approval, reason=note)
        profile = self.profiles.get(found.request.profile)
        if profile is None or profile.digest != found.profile_digest:
            # The approver saw evidence gathered under the assessed profile: approving it
            # must not run the code under another.
            now = profile.digest if profile is not None else "no longer loaded"
            return self.job(found).finish(State.DENIED, approval=approval, reason=(
                f"{note}; but profile {found.request.profile!r} changed while the submission "
                f"awaited approval (assessed {found.profile_digest}, now {now}): submit again "
                "to have it assessed under the profile in force"))
        moved = self.store.move(found, State.RUNNING, approval=approval, reason=note)
        self.announce(moved)
        return moved

    def expire_approvals(self, ttl_s: float) -> list[Submission]:
        """Deny every approval request left unanswered for longer than ``ttl_s``."""
        expired = []
        cutoff = (utcnow() - timedelta(seconds=ttl_s)).isoformat()
        for submission_id in self.store.parked(updated_before=cutoff):
            try:
                found = self.store.get(submission_id)  # one at a time: it is sealed whole
                if found is None or found.state is not State.AWAITING_APPROVAL:
                    continue  # answered meanwhile
                expired.append(self.job(found).finish(
                    State.DENIED, reason=f"approval expired: no answer within {ttl_s:g} s"))
            except Exception:  # one record never stops the sweep of the others
                log.exception("submission %s: could not expire its approval request",
                              submission_id)
        return expired

    def announce(self, submission: Submission) -> None:
        for listener in self.listeners:
            listener(submission)

