"""The SQLite store: submissions, their transitions, workspaces and the receipt log.

WAL with ``synchronous=FULL``: a move is on disk before the side effect it announces. The
receipt log and the transition log are append-only (triggers refuse UPDATE and DELETE). A
terminal state and its receipt are written in one transaction, together with the workspace
compare-and-swap when the submission commits.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic_core import PydanticSerializationError

from controller.adapters.store.reads import GLANCE, Reads, load
from controller.adapters.store.schema import UNFINISHED, connect, migrate
from controller.core import untrusted
from controller.core.lifecycle import TERMINAL, advanced, check_transition
from controller.core.models import LOCAL_AGENT, Diff, DiffSummary, Phase, State, Submission, utcnow
from controller.core.records import (
    SubmissionSummary,
    change_json,
    changes_digest,
    summarize,
)
from controller.errors import (
    CommitConflictError,
    IdempotencyConflictError,
    RuntimeUnavailableError,
    StoreError,
)

log = logging.getLogger(__name__)


def _record(submission: Submission) -> str:
    """The record's JSON, without the request (its own column, written once). Text quoting a
    name with undecodable bytes (an error message naming a file the sandbox made) cannot be
    encoded as is; it is stored escapes and all rather than leaving the submission unable to
    move."""
    try:
        return submission.model_dump_json(exclude={"request"})
    except PydanticSerializationError:
        scrubbed = untrusted.scrub(submission.model_dump(mode="json"))
        return Submission.model_validate(scrubbed).model_dump_json(exclude={"request"})


def _summary(submission: Submission) -> str:
    """The listing line, small whatever the submission did (see ``records.summarize``)."""
    return SubmissionSummary.model_validate(
        untrusted.scrub(summarize(submission).model_dump(mode="json"))).model_dump_json()


# Sandbox uids held by the other submissions in flight, and by pooled sandboxes (a constant:
# see ``UNFINISHED``).
_TAKEN_UIDS = ("SELECT sandbox_uid FROM submissions WHERE sandbox_uid IS NOT NULL AND "  # noqa: S608
               f"{UNFINISHED} AND id != ? UNION SELECT uid FROM uid_holds")


# Moves that must survive a power loss, synced when they commit: what follows them outlives
# the machine's volatile state (a publication; a human asked, or answering). The others are
# atomic and in order, and synced with the next of these: a crash of the process loses
# none of them, and a power loss only ones whose runs (on tmpfs) it took away as well, which
# reconcile ends safely.
DURABLE_MOVES = frozenset({State.COMMITTING, State.AWAITING_APPROVAL})


def _free_uid(db: sqlite3.Connection, uids: range, claimant: str,
              wanted: int | None = None) -> int:
    """A uid of ``uids`` that no submission in flight (but ``claimant``) and no pooled
    sandbox holds: ``wanted`` if it is free, else one of the free ones at random."""
    taken = {int(row[0]) for row in db.execute(_TAKEN_UIDS, (claimant,))}
    if wanted is not None and wanted in uids and wanted not in taken:
        return wanted
    free = [uid for uid in uids if uid not in taken]
    if not free:
        raise RuntimeUnavailableError(f"no sandbox uid is free: {len(taken)} are running or "
                                      "held for pooled sandboxes")
    return secrets.choice(free)


class Store(Reads):
    """One SQLite database, shared by the controller's threads behind one lock.

    A submission's record is synced to disk when it is received, when it moves to one of
    ``DURABLE_MOVES`` or carries an approval, and when it ends with its receipt: three
    syncs for a submission that needs no human (``benchmarks``, issue 13)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._db = connect(path, synchronous="NORMAL")
        migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write; ``durable``: synced to disk when it commits (and every write before
        it with it: the log is one sequence)."""
        with self._lock:
            try:
                if durable:
                    self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._normal(durable)
                raise StoreError(f"cannot start a write: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                self._normal(durable)
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot commit a write: {exc}") from exc
            finally:
                self._normal(durable)

    def _normal(self, durable: bool) -> None:
        if durable:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def insert(self, submission: Submission,
               idempotency: tuple[str, str] | None = None) -> Submission:
        """Record a new submission in ``received``; return it, or the one already recorded.

        ``idempotency`` = (key, body digest): the same key and body return the submission
        recorded first; the same key with another body raises ``IdempotencyConflictError``.
        """
        try:
            with self._transaction(durable=True) as db:
                if idempotency is not None:
                    earlier = self._idempotent(db, submission, *idempotency)
                    if earlier is not None:
                        return earlier
                db.execute(
                    "INSERT INTO submissions (id, agent, workspace, state, created_at, "
                    "updated_at, record, request, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (submission.id, submission.request.agent, submission.request.workspace,
                     submission.state.value, submission.created_at.isoformat(),
                     submission.updated_at.isoformat(), _record(submission),
                     submission.request.model_dump_json(), _summary(submission)))
                self._log(db, submission.id, None, submission.state, "")
                if idempotency is not None:
                    db.execute("INSERT INTO idempotency VALUES (?, ?, ?, ?)",
                               (submission.request.agent, idempotency[0], idempotency[1],
                                submission.id))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record submission {submission.id}: {exc}") from exc
        return submission

    def _idempotent(self, db: sqlite3.Connection, submission: Submission, key: str,
                    digest: str) -> Submission | None:
        row = db.execute("SELECT body_digest, submission_id FROM idempotency "
                         "WHERE principal = ? AND key = ?",
                         (submission.request.agent, key)).fetchone()
        if row is None:
            return None
        if row[0] != digest:
            raise IdempotencyConflictError(
                f"Idempotency-Key {key!r} was used for a different submission body")
        record = db.execute(f"SELECT record, {GLANCE} FROM submissions "  # noqa: S608
                            "WHERE id = ?", (row[1],)).fetchone()
        return load(*record)

    def claim_uid(self, submission_id: str, uids: range, wanted: int | None = None) -> int:
        """A sandbox uid for ``submission_id`` that no other submission in flight holds, in
        the database every controller process shares: ``wanted`` (the uid its dry run had)
        if free, else one of the free ones at random. ``RuntimeUnavailableError`` when none is.
        """
        with self._transaction() as db:
            uid = _free_uid(db, uids, submission_id, wanted)
            db.execute("UPDATE submissions SET sandbox_uid = ? WHERE id = ?",
                       (uid, submission_id))
        return uid

    def hold_uid(self, holder: str, owner: str, uids: range) -> int:
        """A free sandbox uid, held for ``holder`` (a pooled sandbox of ``owner``'s) until a
        submission takes it (``take_held_uid``) or the hold is dropped."""
        with self._transaction() as db:
            uid = _free_uid(db, uids, "")
            db.execute("INSERT INTO uid_holds (uid, holder, owner) VALUES (?, ?, ?)",
                       (uid, holder, owner))
        return uid

    def take_held_uid(self, holder: str, submission_id: str) -> int | None:
        """Move ``holder``'s uid to the submission, in one transaction; None when it holds
        none (its hold was dropped: the sandbox must not be used)."""
        with self._transaction() as db:
            row = db.execute("SELECT uid FROM uid_holds WHERE holder = ?", (holder,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM uid_holds WHERE holder = ?", (holder,))
            db.execute("UPDATE submissions SET sandbox_uid = ? WHERE id = ?",
                       (int(row[0]), submission_id))
        return int(row[0])

    def drop_uid_holds(self, owner: str, holder: str | None = None) -> None:
        """Drop ``holder``'s hold, or every hold of ``owner``'s (its pool is gone)."""
        with self._transaction() as db:
            if holder is None:
                db.execute("DELETE FROM uid_holds WHERE owner = ?", (owner,))
            else:
                db.execute("DELETE FROM uid_holds WHERE owner = ? AND holder = ?",
                           (owner, holder))

    def release_uid(self, submission_id: str) -> None:
        """Give the uid back while nothing of the submission runs (it awaits a human)."""
        with self._transaction() as db:
            db.execute("UPDATE submissions SET sandbox_uid = NULL WHERE id = ?",
                       (submission_id,))

    def keep_run(self, submission_id: str, phase: Phase, diff: Diff | None,
                 outputs: dict[str, bytes]) -> DiffSummary | None:
        """Keep a run's whole diff (a row per change, in path order) and outputs apart from
        the record, which keeps the summary this returns; a page at a time from ``changes``
        and ``output``."""
        summary = None
        rows: list[tuple[str, str, int, str]] = []
        if diff is not None:
            ordered = sorted(diff.changes, key=lambda change: change.path)
            summary = diff.summary(changes_digest(ordered))
            rows = [(submission_id, phase.value, index,
                     json.dumps(change_json(change), ensure_ascii=False))
                    for index, change in enumerate(ordered)]
        try:
            with self._transaction() as db:
                if diff is not None:
                    db.execute("DELETE FROM changes WHERE submission_id = ? AND phase = ?",
                               (submission_id, phase.value))
                    db.executemany("INSERT INTO changes VALUES (?, ?, ?, ?)", rows)
                db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                               [(submission_id, phase.value, stream, data)
                                for stream, data in outputs.items()])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot keep the {phase} run of {submission_id}: {exc}") from exc
        return summary

    def move(self, submission: Submission, target: State, **changes: object) -> Submission:
        """Persist a non-terminal move (checked by the lifecycle) and return the new record."""
        if target in TERMINAL:
            raise StoreError(f"{target} is terminal: end it in terminal(), with its receipt")
        moved = advanced(submission, target, **changes)
        durable = target in DURABLE_MOVES or "approval" in changes
        try:
            with self._transaction(durable=durable) as db:
                self._update(db, submission, moved)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot move {submission.id} to {target}: {exc}") from exc
        return moved

    def update(self, submission: Submission) -> Submission:
        """Persist new facts (observations, decisions) without a state change."""
        try:
            with self._transaction() as db:
                self._update(db, submission, submission, log=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update {submission.id}: {exc}") from exc
        return submission

    @contextmanager
    def terminal(self) -> Iterator[Terminal]:
        """One write transaction in which a submission ends: the head of the receipt log
        read, the workspace swapped, the receipt and the record written, or none of it.
        ``StoreError`` when SQLite refuses; whatever the caller raises rolls it all back."""
        try:
            with self._transaction(durable=True) as db:
                tx = Terminal(self, db)
                try:
                    yield tx
                finally:
                    tx.open = False  # a handle kept past its transaction writes nothing
        except sqlite3.Error as exc:
            raise StoreError(f"cannot end a submission: {exc}") from exc

    def _update(self, db: sqlite3.Connection, before: Submission, after: Submission,
                *, log: bool = True) -> None:
        cursor = db.execute(
            "UPDATE submissions SET state = ?, updated_at = ?, record = ?, summary = ? "
            "WHERE id = ? AND state = ?",
            (after.state.value, after.updated_at.isoformat(), _record(after), _summary(after),
             after.id, before.state.value))
        if cursor.rowcount != 1:
            raise StoreError(f"submission {after.id} is no longer in {before.state}")
        if log:
            self._log(db, after.id, before.state, after.state, untrusted.text(after.reason))

    @staticmethod
    def _log(db: sqlite3.Connection, sid: str, source: State | None, target: State,
             reason: str) -> None:
        db.execute("INSERT INTO transitions (submission_id, from_state, to_state, at, reason) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (sid, source.value if source else None, target.value, utcnow().isoformat(),
                    reason))

    def open_workspace(self, owner: str, name: str) -> tuple[int, str]:
        """(current version, directory) of ``owner``'s workspace ``name``; a new one is
        recorded at version 0. Names are per owner: two agents each have their own
        ``default``, in directories of their own."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO workspaces VALUES (?, ?, ?, 0, NULL, ?)",
                       (owner, name, f"@{owner}/{name}", utcnow().isoformat()))
            row = db.execute("SELECT version, dir FROM workspaces WHERE owner = ? AND name = ?",
                             (owner, name)).fetchone()
        return int(row[0]), str(row[1])

    def workspace_version(self, name: str, owner: str = LOCAL_AGENT) -> int:
        """The current version of a workspace (0 for a new one, which is recorded)."""
        return self.open_workspace(owner, name)[0]

    def check_writable(self) -> None:
        """Raise ``StoreError`` unless a write transaction can start and finish."""
        with self._transaction() as db:
            db.execute("SELECT 1")


class Terminal:
    """The terminal transaction as ``Store.terminal`` hands it out: where the receipt goes
    in the log, and the writes that end a submission."""

    def __init__(self, store: Store, db: sqlite3.Connection) -> None:
        self._store, self._db = store, db
        self.open = True
        row = db.execute("SELECT seq, digest FROM receipts ORDER BY seq DESC LIMIT 1").fetchone()
        self.sequence: int = row[0] + 1 if row else 1
        self.previous: str | None = row[1] if row else None

    def swap_version(self, owner: str, workspace: str, base: int, new: int,
                     tree_digest: str) -> None:
        """Compare-and-swap the workspace from ``base`` to ``new``; ``CommitConflictError``
        if another commit moved it first."""
        self._check_open()
        cursor = self._db.execute(
            "UPDATE workspaces SET version = ?, tree_digest = ?, updated_at = ? "
            "WHERE owner = ? AND name = ? AND version = ?",
            (new, tree_digest, utcnow().isoformat(), owner, workspace, base))
        if cursor.rowcount != 1:
            raise CommitConflictError(f"workspace {workspace!r} moved past version {base} "
                                      "while this submission ran")

    def append(self, before: Submission, after: Submission, envelope: str,
               digest: str) -> None:
        """Write ``after`` (terminal, numbered ``sequence``) over ``before`` and append its
        receipt."""
        self._check_open()
        if after.state not in TERMINAL or after.receipt_seq != self.sequence:
            raise StoreError(f"submission {after.id}: {after.state} with receipt "
                             f"{after.receipt_seq} cannot be appended at {self.sequence}")
        check_transition(before.state, after.state)
        self._db.execute("INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?)",
                         (self.sequence, after.id, after.state.value, digest, envelope,
                          after.updated_at.isoformat()))
        self._store._update(self._db, before, after)

    def _check_open(self) -> None:
        if not self.open:
            raise StoreError("this terminal transaction has ended: open another")
