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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic_core import PydanticSerializationError

from controller.adapters.store.schema import UNFINISHED, connect, migrate
from controller.core import untrusted
from controller.core.lifecycle import TERMINAL, check_transition
from controller.core.models import LOCAL_AGENT, Diff, DiffSummary, Phase, State, Submission, utcnow
from controller.core.records import (
    RequestPreview,
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
from controller.faults import crash_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sealed:
    """A signed receipt ready to be appended."""

    envelope: str
    digest: str


# Builds and signs the receipt of ``submission`` at ``sequence`` after ``previous_digest``.
Sealer = Callable[[Submission, int, str | None], Sealed]


@dataclass(frozen=True)
class Publication:
    """The workspace move that goes with a commit: do it inside the transaction, undo on failure."""

    owner: str
    workspace: str
    base_version: int
    new_version: int
    tree_digest: str
    do: Callable[[], object]
    undo: Callable[[], object]


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


def _load(record: str, request: str) -> Submission:
    return Submission.model_validate({**json.loads(record), "request": json.loads(request)})


# The request without its code and files (up to the body cap): what views and queues need.
_GLANCE = "json_set(request, '$.code', '', '$.files', json('[]'))"


def _summary(submission: Submission) -> str:
    """The listing line, small whatever the submission did (see ``records.summarize``)."""
    return SubmissionSummary.model_validate(
        untrusted.scrub(summarize(submission).model_dump(mode="json"))).model_dump_json()


def _page(columns: str, agent: str | None, state: str | None, since: str | None,
          after_id: str | None, limit: int) -> tuple[str, list[object]]:
    """A listing query, newest first; ``after_id`` continues a page (keyset on created_at,
    id). ``columns`` is one of our constants."""
    query = (f"SELECT {columns} FROM submissions WHERE (? IS NULL OR agent = ?) "  # noqa: S608
             "AND (? IS NULL OR state = ?) AND (? IS NULL OR created_at >= ?)")
    params: list[object] = [agent, agent, state, state, since, since]
    if after_id is not None:
        query += " AND (created_at, id) < (SELECT created_at, id FROM submissions WHERE id = ?)"
        params.append(after_id)
    query += " ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(limit)
    return query, params


CODE_PREVIEW = 64 << 10  # characters of code an approver sees in the queue
FILES_PREVIEW = 100

# Sandbox uids held by the other submissions in flight (a constant: see ``UNFINISHED``).
_TAKEN_UIDS = ("SELECT sandbox_uid FROM submissions WHERE sandbox_uid IS NOT NULL AND "  # noqa: S608
               f"{UNFINISHED} AND id != ?")


class Store:
    """One SQLite database, shared by the controller's threads behind one lock."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._db = connect(path)
        migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a write: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot commit a write: {exc}") from exc

    def insert(self, submission: Submission,
               idempotency: tuple[str, str] | None = None) -> Submission:
        """Record a new submission in ``received``; return it, or the one already recorded.

        ``idempotency`` = (key, body digest): the same key and body return the submission
        recorded first; the same key with another body raises ``IdempotencyConflictError``.
        """
        try:
            with self._transaction() as db:
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
        record = db.execute(f"SELECT record, {_GLANCE} FROM submissions "  # noqa: S608
                            "WHERE id = ?", (row[1],)).fetchone()
        return _load(*record)

    def claim_uid(self, submission_id: str, uids: range, wanted: int | None = None) -> int:
        """A sandbox uid for ``submission_id`` that no other submission in flight holds, in
        the database every controller process shares: ``wanted`` (the uid its dry run had)
        if free, else one of the free ones at random. ``RuntimeUnavailableError`` when none is.
        """
        with self._transaction() as db:
            taken = {int(row[0]) for row in db.execute(_TAKEN_UIDS, (submission_id,))}
            if wanted is not None and wanted in uids and wanted not in taken:
                uid = wanted
            else:
                free = [uid for uid in uids if uid not in taken]
                if not free:
                    raise RuntimeUnavailableError(
                        f"no sandbox uid is free: {len(taken)} submissions are running")
                uid = secrets.choice(free)
            db.execute("UPDATE submissions SET sandbox_uid = ? WHERE id = ?",
                       (uid, submission_id))
        return uid

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

    def changes(self, submission_id: str, phase: Phase, after: int = -1,
                limit: int = 100) -> list[tuple[int, dict[str, object]]]:
        """(index, change) of one run's diff in path order, after ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, change FROM changes WHERE submission_id = ? AND phase = ? "
                "AND idx > ? ORDER BY idx LIMIT ?",
                (submission_id, phase.value, after, limit)).fetchall()
        return [(int(index), json.loads(change)) for index, change in rows]

    def output(self, submission_id: str, phase: Phase, stream: str, offset: int = 0,
               limit: int = 1 << 20) -> tuple[bytes, int] | None:
        """``limit`` bytes of a run's output from ``offset``, and its whole size."""
        with self._lock:
            row = self._db.execute(
                "SELECT substr(data, ?, ?), length(data) FROM outputs WHERE submission_id = ? "
                "AND phase = ? AND stream = ?",
                (offset + 1, limit, submission_id, phase.value, stream)).fetchone()
        return (bytes(row[0] or b""), int(row[1])) if row else None

    def move(self, submission: Submission, target: State, **changes: object) -> Submission:
        """Persist a non-terminal move (checked by the lifecycle) and return the new record."""
        if target in TERMINAL:
            raise StoreError(f"{target} is terminal: use finish(), which writes the receipt")
        moved = self._moved(submission, target, changes)
        try:
            with self._transaction() as db:
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

    def finish(self, submission: Submission, target: State, seal: Sealer,
               publication: Publication | None = None, **changes: object) -> Submission:
        """Move to a terminal state and append its one receipt, atomically.

        With a ``publication`` the workspace compare-and-swap and the tree move happen in the
        same transaction; ``CommitConflictError`` if another commit got there first.
        """
        if target not in TERMINAL:
            raise StoreError(f"{target} is not terminal")
        published = False
        try:
            with self._transaction() as db:
                if publication is not None:
                    self._swap_version(db, publication)
                row = db.execute(
                    "SELECT seq, digest FROM receipts ORDER BY seq DESC LIMIT 1").fetchone()
                sequence, previous = (row[0] + 1, row[1]) if row else (1, None)
                moved = self._moved(submission, target, {**changes, "receipt_seq": sequence})
                sealed = seal(moved, sequence, previous)
                db.execute("INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?)",
                           (sequence, moved.id, target.value, sealed.digest, sealed.envelope,
                            moved.updated_at.isoformat()))
                self._update(db, submission, moved)
                if publication is not None:
                    publication.do()
                    published = True
                    crash_point("published")
        except sqlite3.Error as exc:
            if published and publication is not None:
                publication.undo()
            raise StoreError(f"cannot finish {submission.id} as {target}: {exc}") from exc
        except BaseException:
            if published and publication is not None:
                publication.undo()
            raise
        return moved

    def _swap_version(self, db: sqlite3.Connection, publication: Publication) -> None:
        cursor = db.execute(
            "UPDATE workspaces SET version = ?, tree_digest = ?, updated_at = ? "
            "WHERE owner = ? AND name = ? AND version = ?",
            (publication.new_version, publication.tree_digest, utcnow().isoformat(),
             publication.owner, publication.workspace, publication.base_version))
        if cursor.rowcount != 1:
            raise CommitConflictError(
                f"workspace {publication.workspace!r} moved past version "
                f"{publication.base_version} while this submission ran")

    def _moved(self, submission: Submission, target: State,
               changes: dict[str, object]) -> Submission:
        check_transition(submission.state, target)
        return submission.model_copy(update={**changes, "state": target, "updated_at": utcnow()})

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

    def glance(self, submission_id: str) -> Submission | None:
        """The record with its request's code and files left out (bounded, whatever the
        caller sent): for views and ownership, never to move or seal a submission."""
        with self._lock:
            row = self._db.execute(f"SELECT record, {_GLANCE} FROM submissions "  # noqa: S608
                                   "WHERE id = ?", (submission_id,)).fetchone()
        return _load(*row) if row else None

    def preview(self, submission_id: str) -> RequestPreview | None:
        """What an approver sees of a request, read without loading it whole."""
        with self._lock:
            row = self._db.execute(
                "SELECT substr(json_extract(request, '$.code'), 1, ?), "
                "length(json_extract(request, '$.code')), "
                "json_array_length(request, '$.files') FROM submissions WHERE id = ?",
                (CODE_PREVIEW, submission_id)).fetchone()
            if row is None:
                return None
            paths = self._db.execute(
                "SELECT json_extract(value, '$.path') FROM submissions, "
                "json_each(submissions.request, '$.files') WHERE submissions.id = ? LIMIT ?",
                (submission_id, FILES_PREVIEW)).fetchall()
        return RequestPreview(code=str(row[0] or ""), code_chars=int(row[1] or 0),
                              files=tuple(str(path[0]) for path in paths),
                              files_count=int(row[2] or 0))

    def code(self, submission_id: str) -> str | None:
        """The submitted code alone (not the files beside it)."""
        with self._lock:
            row = self._db.execute("SELECT json_extract(request, '$.code') FROM submissions "
                                   "WHERE id = ?", (submission_id,)).fetchone()
        return str(row[0]) if row else None

    def get(self, submission_id: str) -> Submission | None:
        with self._lock:
            row = self._db.execute("SELECT record, request FROM submissions WHERE id = ?",
                                   (submission_id,)).fetchone()
        return _load(*row) if row else None

    def unfinished(self) -> list[Submission]:
        """Every submission not yet in a terminal state (for reconciliation after a crash)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, record, request FROM submissions WHERE {UNFINISHED}"  # noqa: S608
                " ORDER BY created_at").fetchall()
        return self._readable(rows)

    def in_flight(self) -> list[Submission]:
        """What a crash interrupted: every unfinished submission but those parked for a
        human (which hold nothing, and of which a tenant may have many)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, record, request FROM submissions WHERE {UNFINISHED} "  # noqa: S608
                "AND state != ? ORDER BY created_at",
                (State.AWAITING_APPROVAL.value,)).fetchall()
        return self._readable(rows)

    def parked(self, agent: str | None = None, updated_before: str | None = None,
               limit: int = 1000) -> list[str]:
        """Ids of submissions awaiting approval (of ``agent``; last moved before
        ``updated_before``), oldest first, from indexed columns only."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM submissions WHERE state = ? AND (? IS NULL OR agent = ?) "
                "AND (? IS NULL OR updated_at < ?) ORDER BY updated_at, id LIMIT ?",
                (State.AWAITING_APPROVAL.value, agent, agent, updated_before, updated_before,
                 limit)).fetchall()
        return [str(row[0]) for row in rows]

    def awaiting_approval(self, *, after_id: str | None = None,
                          limit: int = 50) -> list[Submission]:
        """Submissions parked for a human, oldest first, at a glance (``glance``)."""
        query = (f"SELECT id, record, {_GLANCE} FROM submissions "  # noqa: S608
                 "WHERE state = ?")
        params: list[object] = [State.AWAITING_APPROVAL.value]
        if after_id is not None:
            query += (" AND (updated_at, id) > (SELECT updated_at, id FROM submissions "
                      "WHERE id = ?)")
            params.append(after_id)
        query += " ORDER BY updated_at, id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return self._readable(rows)

    @staticmethod
    def _readable(rows: list[tuple[str, str, str]]) -> list[Submission]:
        found = []
        for sid, record, request in rows:
            try:
                found.append(_load(record, request))
            except ValueError:  # a record no release can read stops no other
                log.exception("submission %s: its record cannot be read; skipped", sid)
        return found

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

    def workspaces(self) -> dict[tuple[str, str], tuple[int, str]]:
        """(owner, name) → (version, directory) of every workspace."""
        with self._lock:
            rows = self._db.execute("SELECT owner, name, version, dir FROM workspaces").fetchall()
        return {(str(owner), str(name)): (int(version), str(directory))
                for owner, name, version, directory in rows}

    def receipts(self, since_seq: int = 0, limit: int | None = None,
                 agent: str | None = None, max_bytes: int | None = None) -> list[tuple[int, str]]:
        """(sequence, envelope) in sequence order, exactly as stored; ``agent`` filters;
        ``max_bytes`` ends the page once its envelopes reach that size (at least one)."""
        found: list[tuple[int, str]] = []
        size = 0
        with self._lock:
            cursor = self._db.execute(
                "SELECT r.seq, r.envelope FROM receipts r JOIN submissions s "
                "ON s.id = r.submission_id WHERE r.seq > ? AND (? IS NULL OR s.agent = ?) "
                "ORDER BY r.seq LIMIT ?",
                (since_seq, agent, agent, -1 if limit is None else limit))
            for seq, envelope in cursor:
                found.append((int(seq), str(envelope)))
                size += len(envelope)
                if max_bytes is not None and size >= max_bytes:
                    break
        return found

    def submissions(self, *, agent: str | None, state: str | None = None,
                    since: str | None = None, after_id: str | None = None,
                    limit: int = 50) -> list[Submission]:
        """Newest first; ``after_id`` continues a page (keyset on created_at, id)."""
        query, params = _page("id, record, request", agent, state, since, after_id, limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return self._readable(rows)

    def summaries(self, *, agent: str | None, state: str | None = None,
                  since: str | None = None, after_id: str | None = None,
                  limit: int = 50) -> list[SubmissionSummary]:
        """Like ``submissions``, one small listing line each: no record is read."""
        query, params = _page("id, summary", agent, state, since, after_id, limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        found = []
        for sid, summary in rows:
            try:
                found.append(SubmissionSummary.model_validate_json(summary))
            except ValueError:  # a record no release could read: listed by its columns
                found.append(self._unreadable(sid))
        return found

    def _unreadable(self, submission_id: str) -> SubmissionSummary:
        with self._lock:
            agent, workspace, state, created, updated = self._db.execute(
                "SELECT agent, workspace, state, created_at, updated_at FROM submissions "
                "WHERE id = ?", (submission_id,)).fetchone()
        return SubmissionSummary(
            id=submission_id, state=state, reason="the record cannot be read", agent=agent,
            language="unknown", workspace=workspace, profile="unknown", created_at=created,
            updated_at=updated)

    def events(self, submission_id: str, after: int = 0) -> list[tuple[int, str | None, str, str]]:
        """Transitions as (event id, from, to, at), after the given event id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, from_state, to_state, at FROM transitions "
                "WHERE submission_id = ? AND id > ? ORDER BY id",
                (submission_id, after)).fetchall()
        return [(int(r[0]), r[1], str(r[2]), str(r[3])) for r in rows]

    def workspace(self, owner: str, name: str) -> tuple[int, str] | None:
        """(current version, directory) of ``owner``'s workspace ``name``, or None."""
        with self._lock:
            row = self._db.execute("SELECT version, dir FROM workspaces WHERE owner = ? "
                                   "AND name = ?", (owner, name)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def check_writable(self) -> None:
        """Raise ``StoreError`` unless a write transaction can start and finish."""
        with self._transaction() as db:
            db.execute("SELECT 1")

    def check_readable(self) -> None:
        """Raise ``StoreError`` unless the database answers a read (readiness probes: no
        write lock taken per call, so a flood of probes cannot queue behind the workers)."""
        try:
            with self._lock:
                self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"the database cannot be read: {exc}") from exc

    def owner_of(self, submission_id: str) -> tuple[str, str] | None:
        """(agent, state) of a submission from its indexed columns, never its record: what
        an ownership check or an event stream needs costs the same for every submission."""
        with self._lock:
            row = self._db.execute("SELECT agent, state FROM submissions WHERE id = ?",
                                   (submission_id,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def receipt_for(self, submission_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT envelope FROM receipts WHERE submission_id = ?",
                                   (submission_id,)).fetchone()
        return str(row[0]) if row else None

    def transitions(self, submission_id: str) -> list[tuple[str | None, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT from_state, to_state FROM transitions WHERE submission_id = ? ORDER BY id",
                (submission_id,)).fetchall()
        return [(row[0], row[1]) for row in rows]

    def receipt_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0])

    def tree(self, size: int | None = None) -> tuple[list[str], str | None]:
        """What a checkpoint signs: the payload digests of the first ``size`` receipts (all
        when None) in sequence order, and the key id that signed the last of them."""
        with self._lock:
            rows = self._db.execute("SELECT digest FROM receipts ORDER BY seq LIMIT ?",
                                    (-1 if size is None else size,)).fetchall()
            return [str(row[0]) for row in rows], self.signer_of(len(rows))

    def signer_of(self, sequence: int) -> str | None:
        """The key id on the signature of the receipt at ``sequence`` (None: no such receipt).
        Safe to call while sealing: the lock is re-entrant and the transaction is this one."""
        with self._lock:
            row = self._db.execute("SELECT envelope FROM receipts WHERE seq = ?",
                                   (sequence,)).fetchone()
        if row is None:
            return None
        return str(json.loads(row[0])["signatures"][0]["keyid"])

