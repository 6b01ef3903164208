"""The SQLite schema of the store, its migrations, and how a connection is opened.

``SCHEMA`` is the newest schema; ``MIGRATIONS`` bring a database written by an older release
up to it, in one transaction, under the write lock (``migrate``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from controller.adapters.store import legacy
from controller.core.lifecycle import TERMINAL
from controller.errors import StoreError

log = logging.getLogger(__name__)

# The rows of submissions still in flight (a constant: SQL built from our own enum).
UNFINISHED = "state NOT IN ({})".format(
    ", ".join(f"'{state.value}'" for state in sorted(TERMINAL)))

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    workspace TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    record TEXT NOT NULL,
    sandbox_uid INTEGER,
    request TEXT NOT NULL DEFAULT '{}',
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS submissions_state_updated ON submissions(state, updated_at);
CREATE TABLE IF NOT EXISTS changes (
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    phase TEXT NOT NULL,
    idx INTEGER NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (submission_id, phase, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    phase TEXT NOT NULL,
    stream TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (submission_id, phase, stream)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY,
    submission_id TEXT NOT NULL UNIQUE REFERENCES submissions(id),
    state TEXT NOT NULL,
    digest TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workspaces (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    dir TEXT NOT NULL,
    version INTEGER NOT NULL,
    tree_digest TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    body_digest TEXT NOT NULL,
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    PRIMARY KEY (principal, key)
);
-- Sandbox uids held by pooled sandboxes (started ahead of any submission): no submission
-- claims one while it is held, and a submission that takes the sandbox takes its uid.
CREATE TABLE IF NOT EXISTS uid_holds (
    uid INTEGER PRIMARY KEY,
    holder TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_agent ON submissions(agent, created_at);
CREATE TRIGGER IF NOT EXISTS receipts_no_update BEFORE UPDATE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS receipts_no_delete BEFORE DELETE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transitions_no_update BEFORE UPDATE ON transitions
BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transitions_no_delete BEFORE DELETE ON transitions
BEGIN SELECT RAISE(ABORT, 'transitions are append-only'); END;
"""


def _add_workspace_owner(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(workspaces)")}
    if "owner" not in columns:  # created before workspaces had owners
        db.execute("ALTER TABLE workspaces ADD COLUMN owner TEXT")


def _add_sandbox_uids(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(submissions)")}
    if "sandbox_uid" not in columns:
        db.execute("ALTER TABLE submissions ADD COLUMN sandbox_uid INTEGER")
    # No two submissions in flight share a uid, whichever process (serve, run) claimed it.
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS submissions_sandbox_uid ON "
               f"submissions(sandbox_uid) WHERE sandbox_uid IS NOT NULL AND {UNFINISHED}")


def _index_transitions(db: sqlite3.Connection) -> None:
    # An event stream asks for one submission's transitions after an id: without this index
    # every poll scans the whole (append-only, ever-growing) log.
    db.execute("CREATE INDEX IF NOT EXISTS transitions_submission ON "
               "transitions(submission_id, id)")


def _split_records(db: sqlite3.Connection) -> None:
    """Records written before they were bounded: the request to its own column, each diff
    to its rows and a summary, each output to its row and a preview (``legacy``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(submissions)")}
    for column in ("request", "summary"):
        if column not in columns:
            db.execute(f"ALTER TABLE submissions ADD COLUMN {column} TEXT NOT NULL "
                       "DEFAULT '{}'")
    for sid, record in db.execute("SELECT id, record FROM submissions WHERE summary = '{}'"
                                  ).fetchall():
        try:
            split = legacy.split(record)
        except Exception:  # unreadable before, unreadable now: listed by its columns alone
            log.exception("submission %s: its record cannot be migrated; left as is", sid)
            continue
        db.execute("UPDATE submissions SET record = ?, request = ?, summary = ? WHERE id = ?",
                   (split.record, split.request, split.summary, sid))
        db.executemany("INSERT OR REPLACE INTO changes VALUES (?, ?, ?, ?)",
                       [(sid, *row) for row in split.changes])
        db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                       [(sid, *row) for row in split.outputs])


def _workspaces_per_owner(db: sqlite3.Connection) -> None:
    """Workspace names per principal: (owner, name) is the key. A workspace made before
    keeps its directory (``dir`` = its name); its owner is the agent that used it first."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(workspaces)")}
    if "dir" in columns:
        return
    db.execute("ALTER TABLE workspaces RENAME TO workspaces_global")
    for statement in _statements(SCHEMA):
        if "TABLE IF NOT EXISTS workspaces " in statement:
            db.execute(statement)
    db.execute(
        "INSERT INTO workspaces (owner, name, dir, version, tree_digest, updated_at) "
        "SELECT COALESCE(w.owner, (SELECT s.agent FROM submissions s WHERE s.workspace = w.name "
        "ORDER BY s.created_at LIMIT 1), ''), w.name, w.name, w.version, w.tree_digest, "
        "w.updated_at FROM workspaces_global w")
    db.execute("DROP TABLE workspaces_global")


def _add_uid_holds(db: sqlite3.Connection) -> None:
    """Nothing to move: ``uid_holds`` (in ``SCHEMA``) starts empty."""


# Version n of the schema is reached by MIGRATIONS[n - 1] from version n - 1. ``SCHEMA`` is
# always the newest (but for the index over a column a migration adds); a migration brings a
# database created by an older release up to it.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_add_workspace_owner,
                                                                 _add_sandbox_uids,
                                                                 _index_transitions,
                                                                 _split_records,
                                                                 _workspaces_per_owner,
                                                                 _add_uid_holds)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> None:
    """Bring the database to ``SCHEMA_VERSION`` in one transaction; refuse a newer one."""
    if _version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile,
        # perhaps a newer release, whose schema this one must not touch.
        found = _version(db)
        if found > SCHEMA_VERSION:
            raise StoreError(f"the database has schema version {found}, newer than this "
                             f"release's {SCHEMA_VERSION}: run the release that wrote it")
        if found < SCHEMA_VERSION:
            for statement in _statements(SCHEMA):
                db.execute(statement)
            for step in MIGRATIONS[found:]:
                step(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk)
            db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _statements(script: str) -> list[str]:
    """The statements of a script, for running inside a transaction (``executescript``
    would commit first); a trigger's body holds semicolons, so it is kept whole."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    return statements


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection shared by threads (callers hold their own lock), WAL; commits are
    durable (``FULL``: the log synced at each) unless ``synchronous`` says ``NORMAL``
    (atomic and ordered, synced at the next durable commit or checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    db.execute("PRAGMA foreign_keys=ON")
    return db
