"""The pipeline: one submission's way through the stages, each move persisted first.

``Job`` holds what is on disk for the submission (``sub``) and does each stage's side effect
only after the move that announces it is written, with the ``Means`` it is given (the ports
and the rules; never the controller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from controller.adapters.fs.trees import (
    copy_tree,
    remove_tree,
    scan,
)
from controller.core import untrusted
from controller.core.binding import divergence, radius
from controller.core.gate import (
    admission_context,
    assessment_context,
    matched,
    unattended,
    validation_context,
)
from controller.core.lifecycle import (
    after_admission,
    after_assessment,
    after_bounded_run,
    after_dry_run,
    after_validation,
    safe_terminal,
)
from controller.core.models import (
    AuditSource,
    Decision,
    Diff,
    DiffSummary,
    FileChange,
    Gate,
    Outcome,
    Phase,
    State,
    Submission,
)
from controller.core.ports import (
    COMMANDS,
    SUBMISSION_UIDS,
    KilledFromOutsideError,
    RunResult,
    RunSpec,
)
from controller.core.profile import Profile
from controller.core.radius import Divergence
from controller.core.records import capped, capped_list, preview, without_paths
from controller.core.trees import Entry, as_published, diff_trees, tree_digest
from controller.core.validation import failure_reason, flag_reason, hazards, violations
from controller.errors import (
    CommitConflictError,
    InputError,
    RuntimeUnavailableError,
    TreeChangedError,
    TreeTooDeepError,
    WorkspaceError,
)
from controller.faults import crash_point
from controller.service.evidence import keep_evidence
from controller.service.means import Means
from controller.service.runs import Checkout, Runs
from controller.service.sealing import Publication

log = logging.getLogger(__name__)

class Job:
    """One submission on its way through the pipeline; ``sub`` is always what is on disk."""

    def __init__(self, means: Means, submission: Submission, profile: Profile | None) -> None:
        self.m = means
        self.sub = submission
        self.dir = means.paths.runs / submission.id
        self.runs = Runs(means, self.dir)  # each run's scratch filesystems and sandbox
        self.evidence = means.paths.quarantine / submission.id
        self.profile = profile  # None: no longer loaded (a job that needs it fails closed)
        self.before: dict[str, Entry] = {}
        self._dir: str | None = None
        # The dry run's changes in path order, while this job still holds them (a resumed
        # job reads them back from the store).
        self.dry_changes: list[FileChange] | None = None

    # -- the pipeline -------------------------------------------------------------------

    def drive(self) -> Submission:
        request, profile = self.sub.request, self._profile()
        base, self._dir = self.m.store.open_workspace(request.agent, request.workspace)
        self.m.workspaces.ensure(self._dir)
        self.before = scan(self.m.workspaces.version_dir(self._dir, base),
                           hash_limit=profile.limits.workspace_bytes)
        # Pinned once, before the dry run: both runs start from this id even if the tag moves
        # in between. An engine that cannot resolve it raises, and ``fail`` denies.
        image = self.m.runtime.image_id(profile.image)
        blind = self._unaudited(profile)
        if blind:
            return self.finish(State.DENIED, reason=blind, base_version=base,
                               profile_digest=profile.digest)
        admission = self._decide(Gate.ADMISSION, admission_context(
            request, profile, max_deleted_files=self.m.rules.max_deleted_files))
        if after_admission(admission) is State.DENIED:
            return self.finish(State.DENIED, reason=f"admission: {matched(admission)}",
                               base_version=base, profile_digest=profile.digest)
        uid = self.runs.claim(profile, request.language, image, self.sub.id)
        self._move(State.DRY_RUN, base_version=base, base_tree_digest=tree_digest(self.before),
                   profile_digest=profile.digest, image_id=image, sandbox_uid=uid)
        if self.runs.pair is None:  # pooled: both sandboxes wait already
            self.runs.start_ahead(self._spec(Phase.BOUNDED))  # its start beside the dry run
        dry = self._run(Phase.DRY_RUN)
        try:
            dry_diff = diff_trees(self.before, scan(self.runs.work(Phase.DRY_RUN),
                                                    hash_limit=self._hash_limit()))
        except TreeTooDeepError as exc:
            return self.finish(State.DENIED, None, reason=f"dry run: {exc}",
                               dry_run=dry.observation, **self._keep(Phase.DRY_RUN, dry, None))
        self.runs.release(Phase.DRY_RUN)
        kept = self._keep(Phase.DRY_RUN, dry, dry_diff)
        self.dry_changes = sorted(dry_diff.changes, key=lambda change: change.path)
        if after_dry_run(dry.observation) is State.DENIED:
            return self.finish(State.DENIED, None, reason="dry run: the observation is incomplete: "
                               f"{dry.observation.incomplete}", dry_run=dry.observation, **kept)
        self._move(State.ASSESSING, dry_run=dry.observation, **kept,
                   radius=radius(dry.observation, _recorded(kept.get("dry_run_diff")),
                                 dry_diff.changes))
        context = assessment_context(request, profile, dry.observation,
                                     _recorded(self.sub.dry_run_diff),
                                     max_deleted_files=self.m.rules.max_deleted_files)
        decision = self._decide(Gate.ASSESSMENT, context)
        if decision.outcome is Outcome.PERMIT:
            decision = self._decide(Gate.UNATTENDED, context, unattended)
        target = after_assessment(decision)
        if target is State.DENIED:
            return self.finish(State.DENIED, reason=f"assessment: {matched(decision)}")
        if target is State.AWAITING_APPROVAL:
            return self._park(decision)
        self._move(State.RUNNING)
        return self._bounded_run(context)

    def _park(self, decision: Decision) -> Submission:
        """Wait for a human; a parked submission holds no run slot, so each principal may
        have only ``max_parked`` of them: past that, denied (fail closed)."""
        agent, limit = self.sub.request.agent, self.m.rules.max_parked
        if len(self.m.store.parked(agent=agent, limit=limit)) >= limit:
            return self.finish(State.DENIED, reason=(
                f"assessment: {matched(decision)}; but {agent!r} already has {limit} "
                "submissions awaiting approval (max_parked_per_principal): answer or let "
                "them expire first"))
        # Nothing runs while a human looks: the uid goes back to the pool meanwhile (and the
        # sandbox started ahead goes: an approval starts its own).
        self.runs.discard()
        self.m.store.release_uid(self.sub.id)
        return self._move(State.AWAITING_APPROVAL, reason=f"assessment: {matched(decision)}")

    def resume(self) -> Submission:
        """Continue an approved submission (already moved to ``running``) with its real run."""
        request, profile = self.sub.request, self._profile()
        if self.sub.dry_run is None or self.sub.dry_run_diff is None:
            raise RuntimeUnavailableError("an approved submission lost its dry-run record")
        if profile.digest != self.sub.profile_digest:
            # What was assessed and approved ran under the profile then in force; nothing
            # else may run in its name. (Never ran: nothing to roll back but the record.)
            return self.finish(State.ROLLED_BACK, reason=(
                f"profile {profile.name!r} changed while the submission awaited approval "
                f"(assessed {self.sub.profile_digest}, now {profile.digest}); the real run "
                "did not start: submit again to have it assessed under the new profile"))
        context = assessment_context(request, profile, self.sub.dry_run, self.sub.dry_run_diff,
                                     max_deleted_files=self.m.rules.max_deleted_files)
        # The uid the dry run had, unless another submission took it while this one waited
        # (a parked submission holds none): the clock told the runs apart already.
        uid = self.m.store.claim_uid(self.sub.id, SUBMISSION_UIDS, wanted=self.sub.sandbox_uid)
        if uid != self.sub.sandbox_uid:
            self.sub = self.m.store.update(self.sub.model_copy(update={"sandbox_uid": uid}))
        self.before = scan(self.m.workspaces.version_dir(self._space(),
                                                         self.sub.base_version or 0),
                           hash_limit=profile.limits.workspace_bytes)
        return self._bounded_run(context)

    def _bounded_run(self, context: dict[str, object]) -> Submission:
        """The real run, from ``running`` (moved there by the caller, or by the approval)."""
        try:
            real = self._run(Phase.BOUNDED)
        except RuntimeUnavailableError as exc:
            return self._run_lost(exc)
        try:
            after = scan(self.work, hash_limit=self._hash_limit())
        except TreeTooDeepError as exc:  # a clean dry run, then this: planted
            self.sub = self.m.store.update(self.sub.model_copy(update={
                "bounded_run": real.observation, **self._keep(Phase.BOUNDED, real, None)}))
            return self._quarantine(real, f"validation: {exc}", violations=(str(exc),))
        diff = diff_trees(self.before, after)
        self.sub = self.m.store.update(self.sub.model_copy(update={
            "bounded_run": real.observation, **self._keep(Phase.BOUNDED, real, diff)}))
        planted = hazards(diff)  # weighed before the failure branch, see after_bounded_run
        target = after_bounded_run(real.observation, planted)
        if target is State.QUARANTINED:
            return self._quarantine(real, flag_reason(real.observation, planted),
                                    violations=planted)
        if target is State.ROLLED_BACK:
            return self.finish(State.ROLLED_BACK, reason=failure_reason(real.observation))
        # Weighed after the hazards: a failure here must not keep a quarantine from its end.
        self._move(State.VALIDATING, divergence=self._divergence(
            real, diff, _recorded(self.sub.bounded_run_diff)))
        broken = violations(diff, real.observation, self._profile().limits)
        if broken:
            return self._quarantine(real, "validation: " + "; ".join(broken), violations=broken)
        decision = self._decide(Gate.VALIDATION, validation_context(
            context, real.observation, _recorded(self.sub.bounded_run_diff),
            self.sub.divergence or Divergence()))
        target = after_validation(broken, decision)
        if target is State.QUARANTINED:
            return self._quarantine(real, f"validation: {matched(decision)}")
        if target is State.ROLLED_BACK:
            return self.finish(State.ROLLED_BACK, reason=f"validation: {matched(decision)}")
        # The digest of the tree as published: ``publish`` hands it to root, bits stripped.
        digest = tree_digest(as_published(after))
        try:
            staging = self._stage(digest)
        except TreeChangedError as exc:  # nothing of the sandbox runs now: tampering
            return self._quarantine(real, f"validation: {exc}", violations=(str(exc),))
        return self._commit(staging, digest)

    def _divergence(self, real: RunResult, diff: Diff, summary: DiffSummary) -> Divergence:
        """The real run against the dry run's radius (of the record; one parked before there
        were radii has its own worked out from the dry run it keeps)."""
        dry, dry_diff = self.sub.dry_run, _recorded(self.sub.dry_run_diff)
        if dry is None:
            raise RuntimeUnavailableError("the dry run's observation was not recorded")
        return divergence(self.sub.radius or radius(dry, dry_diff), self._dry_changes(),
                          sorted(diff.changes, key=lambda change: change.path),
                          real.observation, summary,
                          tolerance=self._profile().tolerances)

    def _dry_changes(self) -> Iterator[FileChange]:
        """The dry run's changes in path order: those this job holds, else as stored, a page
        at a time."""
        if self.dry_changes is not None:
            yield from self.dry_changes
            return
        after = -1
        while page := self.m.store.changes(self.sub.id, Phase.DRY_RUN, after, limit=1000):
            yield from (FileChange.model_validate(change) for _, change in page)
            after = page[-1][0]

    def _run_lost(self, failure: RuntimeUnavailableError) -> Submission:
        """The real run failed without a result (the engine failed, or a stranger killed the
        container, after which the error holds what the run showed): a tripwire it fired, or
        a hazard it left in its workspace, still decides — a quarantine, whatever else went
        wrong; otherwise the failure stands."""
        seen = failure.observation if isinstance(failure, KilledFromOutsideError) else None
        if seen is not None and seen.seccomp_killed:
            # A tripwire fired before the stranger's kill: that decides, whatever came after.
            self.sub = self.m.store.update(self.sub.model_copy(update={"bounded_run": seen}))
            return self._quarantine(None, "tripwire: the bounded run was killed by seccomp "
                                    f"(SIGSYS) after a clean dry run; and {failure}")
        if not self.m.tmpfs.mounted(self.work):
            raise failure
        try:
            diff = diff_trees(self.before, scan(self.work, hash_limit=self._hash_limit()))
        except TreeTooDeepError as exc:
            return self._quarantine(None, f"validation: {exc}; and {failure}",
                                    violations=(str(exc),))
        summary = self.m.store.keep_run(self.sub.id, Phase.BOUNDED, diff, {})
        self.sub = self.m.store.update(self.sub.model_copy(update={"bounded_run_diff": summary}))
        planted = hazards(diff)
        if planted:
            return self._quarantine(None, "validation: " + "; ".join(planted) + f"; and "
                                    f"{failure}", violations=planted)
        raise failure

    def _commit(self, staging: Path, digest: str) -> Submission:
        self._move(State.COMMITTING)
        request, base, space = self.sub.request, self.sub.base_version or 0, self._space()
        new = base + 1
        publication = Publication(owner=request.agent, workspace=request.workspace,
                                  directory=space, staging=staging, base=base, new=new,
                                  tree_digest=digest)
        try:
            return self.finish(State.COMMITTED, publication=publication, new_version=new,
                               new_tree_digest=digest, reason="committed")
        except CommitConflictError as exc:
            return self.finish(State.ROLLED_BACK, reason=f"conflict: {exc}")

    # -- steps ---------------------------------------------------------------------------

    def _decide(self, gate: Gate, context: dict[str, object],
                mapping: Callable[[Decision], Decision] = lambda d: d) -> Decision:
        """Ask the policy engine; the answer is kept in the record with the next write."""
        request = self.sub.request
        decision = mapping(self.m.engine.decide(gate, request.agent, request.workspace, context))
        self.sub = self.sub.model_copy(update={"decisions": (*self.sub.decisions, decision)})
        return decision

    def _run(self, phase: Phase) -> RunResult:
        checkout = Checkout(self._space(), self.sub.base_version or 0, self.sub.request)
        return self.runs.run(self._spec(phase), checkout)

    def _spec(self, phase: Phase) -> RunSpec:
        profile = self._profile()
        if self.sub.image_id is None:
            raise RuntimeUnavailableError("no image was pinned before the dry run")
        if self.sub.sandbox_uid is None:
            raise RuntimeUnavailableError("no sandbox uid was recorded before the dry run")
        return RunSpec(submission_id=self.sub.id, phase=phase, profile=profile,
                       command=COMMANDS[self.sub.request.language][1],
                       workspace_dir=self.runs.work(phase), code_dir=self.runs.code(phase),
                       image=self.sub.image_id, network=profile.network and phase is Phase.BOUNDED,
                       uid=self.sub.sandbox_uid)

    def _stage(self, digest: str) -> Path:
        """Copy the validated run copy off its tmpfs onto the data disk, and prove the copy is
        the tree that was validated: what is committed is what was validated, by check."""
        staging = self.dir / "staging"
        remove_tree(staging)
        left_out = copy_tree(self.work, staging, budget=self._hash_limit())
        if left_out:  # over workspace_bytes in all: whatever the bundle says, never copied
            raise WorkspaceError(f"the tree is over workspace_bytes ({self._hash_limit()}); "
                                 f"not staged: {left_out[:5]}")
        try:
            self.m.tmpfs.hand_to_root(staging)  # what is published is root's, whatever ran
        except OSError as exc:
            raise WorkspaceError(f"cannot take the staged tree back: {exc}") from exc
        copied = tree_digest(as_published(scan(staging, hash_limit=self._hash_limit())))
        if copied != digest:
            raise TreeChangedError(f"the tree changed after validation (validated {digest}, "
                                   f"staged {copied}); nothing is committed")
        return staging

    def _quarantine(self, real: RunResult | None, reason: str, *,
                    violations: tuple[str, ...] = ()) -> Submission:
        work = self.work if self.m.tmpfs.mounted(self.work) else None
        summary = keep_evidence(self.evidence, self.sub, real, work, self.m.tmpfs,
                                budget=self._hash_limit())
        return self.finish(State.QUARANTINED, reason=reason, violations=violations,
                           evidence_dir=str(self.evidence), evidence=summary)

    def finish(self, target: State, publication: Publication | None = None,
               **changes: object) -> Submission:
        self.sub = self.m.sealer.finish(self.sub, target, publication, **self._safe(changes))
        crash_point("sealed")
        self.m.announce(self.sub)
        return self.sub

    def fail(self, reason: str) -> Submission:
        """End safely for where the submission stands (the lifecycle says where)."""
        bounded, diff = self.sub.bounded_run, self.sub.bounded_run_diff
        # Evidence on disk means a quarantine was under way (a crash between keeping the
        # evidence and the terminal state): finish it, never downgrade it to a rollback.
        flagged = (bounded is not None and bounded.seccomp_killed) or (
            diff is not None and diff.hazardous) or self.evidence.exists()
        target = safe_terminal(self.sub.state, flagged=flagged)
        if target is self.sub.state:
            return self.sub
        evidence = str(self.evidence) if target is State.QUARANTINED and (
            self.evidence.exists()) else self.sub.evidence_dir
        return self.finish(target, reason=f"infrastructure failure: {reason}",
                           evidence_dir=evidence)

    @property
    def work(self) -> Path:
        """The real run's copy: validated, staged, kept as evidence."""
        return self.runs.work(Phase.BOUNDED)

    def cleanup(self) -> None:
        self.runs.close()
        self.m.tmpfs.release(self.dir)
        if not self.m.rules.keep_run_dirs and self.dir.exists():
            remove_tree(self.dir)

    def _move(self, target: State, **changes: object) -> Submission:
        self.sub = self.m.store.move(self.sub, target, **self._safe(changes))
        crash_point(target.value)
        self.m.announce(self.sub)
        return self.sub

    def _unaudited(self, profile: Profile) -> str | None:
        """Why a run must be refused for want of a kernel audit source, if it must."""
        if profile.accept_unaudited or self.m.runtime.audit_source() is not AuditSource.NONE:
            return None
        return ("admission: no kernel audit source is readable (neither the audit netlink "
                "group nor /dev/kmsg), so a child's tripwire would go unseen; runs are "
                f"refused unless the profile sets accept_unaudited (profile {profile.name!r} "
                "does not)")

    def _space(self) -> str:
        """The directory of the submission's workspace (names are per agent)."""
        if self._dir is None:
            request = self.sub.request
            self._dir = self.m.store.open_workspace(request.agent, request.workspace)[1]
        return self._dir

    def _keep(self, phase: Phase, result: RunResult, diff: Diff | None) -> dict[str, object]:
        """Keep a run's whole diff and outputs apart; what the record keeps of them."""
        summary = self.m.store.keep_run(self.sub.id, phase, diff,
                                        {"stdout": result.stdout, "stderr": result.stderr})
        kept: dict[str, object] = {"stdout": preview(result.stdout),
                                   "stderr": preview(result.stderr)}
        if summary is not None:
            kept["dry_run_diff" if phase is Phase.DRY_RUN else "bounded_run_diff"] = summary
        return kept

    def _safe(self, changes: dict[str, object]) -> dict[str, object]:
        """Reasons and violations can quote what the sandbox made (an OSError naming a file
        with undecodable bytes, thousands of hazardous paths) and the controller's own
        paths: made encodable, bounded and free of host paths before they reach the record
        and the receipt."""
        roots = [str(path) for path in self.m.paths.roots()] + [str(self.m.workspaces.root)]
        safe = dict(changes)
        if isinstance(reason := safe.get("reason"), str):
            safe["reason"] = capped(without_paths(untrusted.text(reason), roots))
        if isinstance(found := safe.get("violations"), tuple):
            safe["violations"] = capped_list(tuple(
                without_paths(untrusted.text(str(item)), roots) for item in found))
        return safe

    def _profile(self) -> Profile:
        if self.profile is None:
            raise InputError(f"profile {self.sub.request.profile!r} is no longer loaded")
        return self.profile

    def _hash_limit(self) -> int:
        return self._profile().limits.workspace_bytes


def _recorded(diff: object) -> DiffSummary:
    if not isinstance(diff, DiffSummary):
        raise RuntimeUnavailableError("a run's diff was not recorded")
    return diff


