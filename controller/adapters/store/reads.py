"""What the store answers: records, listings, runs' diffs and outputs, receipts and
workspaces, read under the store's lock and never written. ``Store`` (``submissions``) adds
the writes."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

from controller.adapters.store.schema import UNFINISHED
from controller.core.models import Phase, State, Submission
from controller.core.records import RequestPreview, SubmissionSummary
from controller.errors import StoreError

log = logging.getLogger(__name__)


def load(record: str, request: str) -> Submission:
    return Submission.model_validate({**json.loads(record), "request": json.loads(request)})


# The request without its code and files (up to the body cap): what views and queues need.
GLANCE = "json_set(request, '$.code', '', '$.files', json('[]'))"


def page(columns: str, agent: str | None, state: str | None, since: str | None,
         after_id: str | None, limit: int,
         workspace: str | None = None) -> tuple[str, list[object]]:
    """A listing query, newest first; ``after_id`` continues a page (keyset on created_at,
    id). ``columns`` is one of our constants. ``workspace`` is a name, not an owner's: with
    ``agent`` None it keeps every agent's workspace of that name."""
    query = (f"SELECT {columns} FROM submissions WHERE (? IS NULL OR agent = ?) "  # noqa: S608
             "AND (? IS NULL OR state = ?) AND (? IS NULL OR created_at >= ?) "
             "AND (? IS NULL OR workspace = ?)")
    params: list[object] = [agent, agent, state, state, since, since, workspace, workspace]
    if after_id is not None:
        query += " AND (created_at, id) < (SELECT created_at, id FROM submissions WHERE id = ?)"
        params.append(after_id)
    query += " ORDER BY created_at DESC, id DESC LIMIT ?"
    params.append(limit)
    return query, params


# One event of the feed of every submission's transitions (``Reads.feed``): event id,
# submission id, agent, workspace, from state (None for the first), to state, when.
FeedRow = tuple[int, str, str, str, str | None, str, str]
CODE_PREVIEW = 64 << 10  # characters of code an approver sees in the queue
FILES_PREVIEW = 100


class Reads:
    """The read side of one SQLite database; ``Store`` opens it and adds the writes."""

    _db: sqlite3.Connection
    _lock: threading.RLock

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

    def glance(self, submission_id: str) -> Submission | None:
        """The record with its request's code and files left out (bounded, whatever the
        caller sent): for views and ownership, never to move or seal a submission."""
        with self._lock:
            row = self._db.execute(f"SELECT record, {GLANCE} FROM submissions "  # noqa: S608
                                   "WHERE id = ?", (submission_id,)).fetchone()
        return load(*row) if row else None

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
        return load(*row) if row else None

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
        query = (f"SELECT id, record, {GLANCE} FROM submissions "  # noqa: S608
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
                found.append(load(record, request))
            except ValueError:  # a record no release can read stops no other
                log.exception("submission %s: its record cannot be read; skipped", sid)
        return found

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
                    limit: int = 50, workspace: str | None = None) -> list[Submission]:
        """Newest first; ``after_id`` continues a page (keyset on created_at, id)."""
        query, params = page("id, record, request", agent, state, since, after_id, limit,
                             workspace)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return self._readable(rows)

    def summaries(self, *, agent: str | None, state: str | None = None,
                  since: str | None = None, after_id: str | None = None,
                  limit: int = 50, workspace: str | None = None) -> list[SubmissionSummary]:
        """Like ``submissions``, one small listing line each: no record is read."""
        query, params = page("id, summary", agent, state, since, after_id, limit, workspace)
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

    def feed(self, after: int, *, agent: str | None, parked_only: bool = False,
             limit: int = 200, window: int = 5000) -> tuple[list[FeedRow], int, int]:
        """Transitions of every submission after event ``after``, in order: (rows, cursor,
        head). Each row is (event id, submission id, agent, workspace, from, to, at).

        ``agent`` keeps one agent's; ``parked_only`` keeps a submission's transitions from
        its parking for approval on (what an approver may read). At most ``window`` event
        ids are scanned per call, so a filter that matches nothing costs a bounded read:
        resume from ``cursor`` (the last id scanned); ``head`` is the newest event id."""
        with self._lock:
            head = int(self._db.execute(
                "SELECT COALESCE(MAX(id), 0) FROM transitions").fetchone()[0])
            upto = min(head, after + window)
            rows = self._db.execute(
                "SELECT t.id, t.submission_id, s.agent, s.workspace, t.from_state, t.to_state, "
                "t.at FROM transitions t JOIN submissions s ON s.id = t.submission_id "
                "WHERE t.id > ? AND t.id <= ? AND (? IS NULL OR s.agent = ?) AND (? = 0 OR "
                "EXISTS (SELECT 1 FROM transitions p WHERE p.submission_id = t.submission_id "
                "AND p.to_state = ? AND p.id <= t.id)) ORDER BY t.id LIMIT ?",
                (after, upto, agent, agent, int(parked_only), State.AWAITING_APPROVAL.value,
                 limit)).fetchall()
        found: list[FeedRow] = [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], str(r[5]),
                                 str(r[6])) for r in rows]
        cursor = found[-1][0] if len(found) == limit else upto
        return found, max(cursor, after), head

    def workspace(self, owner: str, name: str) -> tuple[int, str] | None:
        """(current version, directory) of ``owner``'s workspace ``name``, or None."""
        with self._lock:
            row = self._db.execute("SELECT version, dir FROM workspaces WHERE owner = ? "
                                   "AND name = ?", (owner, name)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

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
