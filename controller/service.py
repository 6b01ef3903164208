"""The service: wires the lifecycle to the adapters and drives each submission to its end.

Every move is persisted before the side effect it announces; every failure ends in the safe
terminal state for where the submission stood (``lifecycle.safe_terminal``), with its receipt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller import receipts
from controller.errors import CommitConflictError, InputError, RuntimeUnavailableError
from controller.gate import assessment_context, matched, validation_context
from controller.lifecycle import (
    after_assessment,
    after_bounded_run,
    after_dry_run,
    after_validation,
    safe_terminal,
)
from controller.models import (
    Gate,
    Language,
    Phase,
    Profile,
    State,
    Submission,
    SubmissionRequest,
)
from controller.policy.cedar import CedarEngine
from controller.ports import RunResult, RunSpec, SandboxRuntime
from controller.signing import Ed25519Signer, envelope_json
from controller.store import Publication, Sealed, Store
from controller.validation import hazards, violations
from controller.verify.dsse import payload_digest
from controller.workspace import (
    Entry,
    Workspaces,
    as_published,
    diff_trees,
    hand_to_root,
    scan,
    tree_digest,
)

log = logging.getLogger("sandgate")

COMMANDS = {
    Language.PYTHON: ("main.py", ("python3", "/sandbox/main.py")),
    Language.SH: ("main.sh", ("/bin/sh", "/sandbox/main.sh")),
}
Listener = Callable[[Submission], None]


@dataclass
class Paths:
    runs: Path
    quarantine: Path


class Controller:
    """Accepts submissions and drives them through the lifecycle, one call per submission."""

    def __init__(self, *, store: Store, runtime: SandboxRuntime, engine: CedarEngine,
                 signer: Ed25519Signer, profiles: dict[str, Profile], workspaces: Workspaces,
                 paths: Paths, max_deleted_files: int = 20, keep_run_dirs: bool = False) -> None:
        self.store = store
        self.runtime = runtime
        self.engine = engine
        self.signer = signer
        self.profiles = profiles
        self.workspaces = workspaces
        self.paths = paths
        self.max_deleted_files = max_deleted_files
        self.keep_run_dirs = keep_run_dirs
        self.listeners: list[Listener] = []

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
            trace_id=uuid.uuid4().hex,
            request=request,
            code_sha256=hashlib.sha256(request.code.encode()).hexdigest(),
        )
        recorded = self.store.insert(submission, idempotency)
        if recorded.id != submission.id:
            return recorded, False
        self._announce(submission)
        return submission, True

    def process(self, submission: Submission) -> Submission:
        job = _Job(self, submission)
        try:
            return job.drive()
        except Exception as exc:
            log.exception("submission %s failed in %s", job.sub.id, job.sub.state)
            return job.fail(f"{type(exc).__name__}: {exc}")
        finally:
            job.cleanup()

    def reconcile(self) -> list[Submission]:
        """After a restart: remove our containers, end every interrupted submission safely."""
        self.runtime.remove_owned()
        ended = []
        for submission in self.store.unfinished():
            if submission.state is State.AWAITING_APPROVAL:
                continue  # parked on purpose; nothing was in flight
            job = _Job(self, submission)
            if submission.state is State.COMMITTING and submission.base_version is not None:
                current = self.store.workspace_version(submission.request.workspace)
                if current == submission.base_version:
                    self.workspaces.unpublish(submission.request.workspace, current + 1)
            ended.append(job.fail(f"controller restarted while the submission was in "
                                  f"{submission.state}"))
            job.cleanup()
        return ended

    def seal(self, submission: Submission, sequence: int, previous: str | None) -> Sealed:
        document = receipts.statement(submission, sequence=sequence, previous_digest=previous,
                                      profile_name=submission.request.profile)
        payload = receipts.canonical(document)
        return Sealed(envelope=envelope_json(payload, self.signer),
                      digest=payload_digest(payload))

    def _announce(self, submission: Submission) -> None:
        for listener in self.listeners:
            listener(submission)


class _Job:
    """One submission on its way through the pipeline; ``sub`` is always what is on disk."""

    def __init__(self, controller: Controller, submission: Submission) -> None:
        self.c = controller
        self.sub = submission
        self.dir = controller.paths.runs / submission.id
        # One host path behind /workspace for both runs: mountinfo shows it, so a per-phase
        # path would tell the code which run it is in. The bounded run's copy is the staging.
        self.work = self.dir / "work"
        self.evidence = controller.paths.quarantine / submission.id
        self.profile = controller.profiles.get(submission.request.profile)
        self.before: dict[str, Entry] = {}

    # -- the pipeline -------------------------------------------------------------------

    def drive(self) -> Submission:
        request, profile = self.sub.request, self._profile()
        base = self.c.store.workspace_version(request.workspace)
        self.c.workspaces.ensure(request.workspace)
        self.before = scan(self.c.workspaces.version_dir(request.workspace, base),
                           hash_limit=profile.limits.workspace_bytes)
        # Pinned once, before the dry run: both runs start from this id even if the tag moves
        # in between. An engine that cannot resolve it raises, and ``fail`` denies.
        image = self.c.runtime.image_id(profile.image)
        self._move(State.DRY_RUN, base_version=base, base_tree_digest=tree_digest(self.before),
                   profile_digest=profile.digest, image_id=image)
        dry = self._run(Phase.DRY_RUN)
        dry_diff = diff_trees(self.before, scan(self.work, hash_limit=self._hash_limit()))
        self._discard_work()
        self._move(after_dry_run(dry.observation), dry_run=dry.observation, dry_run_diff=dry_diff,
                   **_outputs(dry))
        context = assessment_context(request, profile, dry.observation, dry_diff,
                                     max_deleted_files=self.c.max_deleted_files)
        decision = self.c.engine.decide(Gate.ASSESSMENT, request.agent, request.workspace,
                                        context)
        self.sub = self.sub.model_copy(update={"decisions": (*self.sub.decisions, decision)})
        target = after_assessment(decision)
        if target is State.DENIED:
            return self.finish(State.DENIED, reason=f"assessment: {matched(decision)}")
        if target is State.AWAITING_APPROVAL:
            return self._move(target, reason=f"assessment: {matched(decision)}")
        return self._bounded_run(context)

    def _bounded_run(self, context: dict[str, object]) -> Submission:
        self._move(State.RUNNING)
        real = self._run(Phase.BOUNDED)
        after = scan(self.work, hash_limit=self._hash_limit())
        diff = diff_trees(self.before, after)
        self.sub = self.c.store.update(self.sub.model_copy(update={
            "bounded_run": real.observation, "bounded_run_diff": diff, **_outputs(real)}))
        planted = hazards(diff)  # weighed before the failure branch, see after_bounded_run
        target = after_bounded_run(real.observation, planted)
        if target is State.QUARANTINED:
            return self._quarantine(real, _flag_reason(real, planted), violations=planted)
        if target is State.ROLLED_BACK:
            return self.finish(State.ROLLED_BACK, reason=_failure(real))
        self._move(State.VALIDATING)
        broken = violations(diff, real.observation, self._profile().limits)
        if broken:
            return self._quarantine(real, "validation: " + "; ".join(broken), violations=broken)
        decision = self.c.engine.decide(Gate.VALIDATION, self.sub.request.agent,
                                        self.sub.request.workspace,
                                        validation_context(context, real.observation, diff))
        self.sub = self.sub.model_copy(update={"decisions": (*self.sub.decisions, decision)})
        if after_validation(broken, decision) is State.ROLLED_BACK:
            return self.finish(State.ROLLED_BACK, reason=f"validation: {matched(decision)}")
        # The digest of the tree as published: ``publish`` hands it to root, bits stripped.
        return self._commit(self.work, tree_digest(as_published(after)))

    def _commit(self, staging: Path, digest: str) -> Submission:
        self._move(State.COMMITTING)
        name, base = self.sub.request.workspace, self.sub.base_version or 0
        new = base + 1
        publication = Publication(
            workspace=name, base_version=base, new_version=new, tree_digest=digest,
            do=lambda: self.c.workspaces.publish(staging, name, new),
            undo=lambda: self.c.workspaces.unpublish(name, new))
        try:
            return self.finish(State.COMMITTED, publication=publication, new_version=new,
                               new_tree_digest=digest, reason="committed")
        except CommitConflictError as exc:
            return self.finish(State.ROLLED_BACK, reason=f"conflict: {exc}")

    # -- steps ---------------------------------------------------------------------------

    def _run(self, phase: Phase) -> RunResult:
        request, profile = self.sub.request, self._profile()
        base = self.sub.base_version or 0
        if self.sub.image_id is None:
            raise RuntimeUnavailableError("no image was pinned before the dry run")
        self.c.workspaces.checkout(request.workspace, base, self.work, request.files)
        self._write_code()
        spec = RunSpec(submission_id=self.sub.id, phase=phase, profile=profile,
                       command=COMMANDS[request.language][1], workspace_dir=self.work,
                       code_dir=self.dir / "code", image=self.sub.image_id,
                       network=profile.network and phase is Phase.BOUNDED)
        return self.c.runtime.run(spec)

    def _discard_work(self) -> None:
        """Free the run path at once (one rename), then remove what the dry run left."""
        discarded = self.dir / "dry-discarded"
        os.rename(self.work, discarded)
        shutil.rmtree(discarded)

    def _quarantine(self, real: RunResult, reason: str, *,
                    violations: tuple[str, ...] = ()) -> Submission:
        evidence = self.evidence
        evidence.parent.mkdir(parents=True, exist_ok=True)
        evidence.mkdir(mode=0o700, exist_ok=True)
        evidence.chmod(0o700)  # for the security team only; never the sandbox user's
        (evidence / "stdout.log").write_bytes(real.stdout)
        (evidence / "stderr.log").write_bytes(real.stderr)
        (evidence / "container_changes.json").write_text(json.dumps(real.container_changes))
        (evidence / "submission.json").write_text(self.sub.model_dump_json(indent=2))
        (evidence / "code").write_text(self.sub.request.code)
        if self.work.exists():
            os.rename(self.work, evidence / "workspace")
            hand_to_root(evidence / "workspace")  # no setuid bit survives into the evidence
        return self.finish(State.QUARANTINED, reason=reason, violations=violations,
                           evidence_dir=str(evidence))

    def finish(self, target: State, publication: Publication | None = None,
               **changes: object) -> Submission:
        self.sub = self.c.store.finish(self.sub, target, self.c.seal, publication, **changes)
        self.c._announce(self.sub)
        return self.sub

    def fail(self, reason: str) -> Submission:
        """End safely for where the submission stands (the lifecycle says where)."""
        bounded, diff = self.sub.bounded_run, self.sub.bounded_run_diff
        # Evidence on disk means a quarantine was under way (a crash between keeping the
        # evidence and the terminal state): finish it, never downgrade it to a rollback.
        flagged = (bounded is not None and bounded.seccomp_killed) or (
            diff is not None and bool(hazards(diff))) or self.evidence.exists()
        target = safe_terminal(self.sub.state, flagged=flagged)
        if target is self.sub.state:
            return self.sub
        evidence = str(self.evidence) if target is State.QUARANTINED and (
            self.evidence.exists()) else self.sub.evidence_dir
        return self.finish(target, reason=f"infrastructure failure: {reason}",
                           evidence_dir=evidence)

    def cleanup(self) -> None:
        if not self.c.keep_run_dirs and self.dir.exists():
            shutil.rmtree(self.dir)

    def _move(self, target: State, **changes: object) -> Submission:
        self.sub = self.c.store.move(self.sub, target, **changes)
        self.c._announce(self.sub)
        return self.sub

    def _write_code(self) -> None:
        """Write the code afresh before each run, so its times do not age between the runs."""
        code_dir = self.dir / "code"
        if code_dir.exists():
            shutil.rmtree(code_dir)
        code_dir.mkdir(parents=True, mode=0o755)
        code_dir.chmod(0o755)
        path = code_dir / COMMANDS[self.sub.request.language][0]
        path.write_text(self.sub.request.code)
        path.chmod(0o644)

    def _profile(self) -> Profile:
        if self.profile is None:
            raise InputError(f"profile {self.sub.request.profile!r} is no longer loaded")
        return self.profile

    def _hash_limit(self) -> int:
        return self._profile().limits.workspace_bytes


def _outputs(result: RunResult) -> dict[str, object]:
    return {"stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace")}


def _flag_reason(result: RunResult, planted: tuple[str, ...]) -> str:
    parts = []
    if result.observation.seccomp_killed:
        parts.append("tripwire: the bounded run was killed by seccomp (SIGSYS) after a clean "
                     "dry run")
    if planted:
        parts.append("validation: " + "; ".join(planted))
    if not result.observation.succeeded:
        parts.append(_failure(result))
    return "; ".join(parts)


def _failure(result: RunResult) -> str:
    observation = result.observation
    limits = ", ".join(limit.value for limit in observation.limits_hit)
    detail = f"limit hit: {limits}" if limits else f"exit code {observation.exit_code}"
    return f"bounded run failed ({detail})"

