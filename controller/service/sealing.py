"""Ending a submission: the terminal state, its one signed receipt and, for a commit, the new
workspace version, all in one of the store's transactions or none of it.

The store stores; signing and the filesystem move are the service's, done here inside the
transaction the store provides, and undone if it does not commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.adapters.fs.workspaces import Workspaces
from controller.core import receipts
from controller.core.lifecycle import TERMINAL, advanced
from controller.core.models import State, Submission, utcnow
from controller.core.ports import Signer, SubmissionStore
from controller.errors import IllegalTransitionError
from controller.faults import crash_point
from controller.verify.dsse import payload_digest

log = logging.getLogger("sandgate")


@dataclass(frozen=True)
class Publication:
    """The workspace move that goes with a commit: ``staging`` becomes version ``new`` of the
    owner's workspace (stored in ``directory``) if it still stands at ``base``."""

    owner: str
    workspace: str
    directory: str
    staging: Path
    base: int
    new: int
    tree_digest: str


class Sealer:
    """Ends submissions: one receipt each, numbered and chained in the store's log."""

    def __init__(self, store: SubmissionStore, signer: Signer, workspaces: Workspaces) -> None:
        self.store = store
        self.signer = signer
        self.workspaces = workspaces
        # Told of each sealed submission, with when its sealing began and ended.
        self.on_sealed: Callable[[Submission, datetime, datetime], None] | None = None

    def finish(self, submission: Submission, target: State,
               publication: Publication | None = None, **changes: object) -> Submission:
        """Move ``submission`` to the terminal ``target`` with its receipt, atomically; with a
        ``publication``, the compare-and-swap and the tree move too (``CommitConflictError``
        if another commit got there first, and nothing is written)."""
        if target not in TERMINAL:
            raise IllegalTransitionError(f"{target} is not terminal")
        published = False
        started = utcnow()
        try:
            with self.store.terminal() as tx:
                if publication is not None:
                    tx.swap_version(publication.owner, publication.workspace,
                                    publication.base, publication.new, publication.tree_digest)
                ended = advanced(submission, target, **changes, receipt_seq=tx.sequence)
                envelope, digest = self.seal(ended, tx.sequence, tx.previous)
                tx.append(submission, ended, envelope, digest)
                if publication is not None:
                    self.workspaces.publish(publication.staging, publication.directory,
                                            publication.new)
                    published = True
                    crash_point("published")
        except BaseException:
            if published and publication is not None:
                self.workspaces.unpublish(publication.directory, publication.new)
            raise
        if self.on_sealed is not None:
            self.on_sealed(ended, started, utcnow())
        return ended

    def seal(self, submission: Submission, sequence: int,
             previous: str | None) -> tuple[str, str]:
        """The signed receipt (envelope JSON, payload digest); if the full statement cannot
        be built or encoded (the record holds something the sandbox made that we failed to
        make safe), a minimal one naming the failure: a terminal state is never left without
        its receipt.

        The first receipt under a new key carries the handover from the key of the receipt
        before it (either form), so the log itself says which key signs which sequence."""
        rotation = self.signer.handover(self.store.signer_of(sequence - 1), sequence)
        try:
            payload = receipts.canonical(receipts.with_key_rotation(receipts.statement(
                submission, sequence=sequence, previous_digest=previous,
                profile_name=submission.request.profile), rotation))
        except Exception as exc:  # any failure here is ours; the submission must still end
            log.exception("submission %s: full receipt failed; sealing a minimal one",
                          submission.id)
            payload = receipts.canonical(receipts.with_key_rotation(receipts.minimal_statement(
                submission, sequence=sequence, previous_digest=previous,
                failure=f"{type(exc).__name__}: {exc}"), rotation))
        return self.signer.envelope(payload), payload_digest(payload)
