"""Principals and their API keys, in the controller's SQLite database.

A key is shown once, when it is made; only its sha256 is stored (keys are 256-bit random,
so a plain digest is enough to make a stolen table useless). A principal may have a quota of
its own, its share of the run queue (``Quota``); where it has none, the settings' defaults
apply.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from controller.adapters.store.schema import connect
from controller.core.models import Principal, Role, utcnow
from controller.errors import InputError, NotFoundError, StoreError

KEY_PREFIX = "sg_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    max_running INTEGER,
    max_queued INTEGER
);
"""
# Added after the first release: a table made before has them added when it is opened.
QUOTA_COLUMNS = ("max_running", "max_queued")
MAX_QUOTA = 10_000


class Quota(NamedTuple):
    """A principal's own share of the run queue; None where the controller's default applies
    (``SANDGATE_MAX_RUNNING_PER_PRINCIPAL``, ``SANDGATE_MAX_QUEUED_PER_PRINCIPAL``)."""

    max_running: int | None = None
    max_queued: int | None = None

    def check(self) -> None:
        """Refuse a quota no submission could ever run under."""
        for name, value in zip(QUOTA_COLUMNS, self, strict=True):
            if value is not None and not 1 <= value <= MAX_QUOTA:
                raise InputError(f"{name} must be between 1 and {MAX_QUOTA} (or the "
                                 f"default), not {value}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Principals:
    """Who may call the API, with which role."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.executescript(SCHEMA)
        _add_quota_columns(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, name: str, role: Role, quota: Quota | None = None) -> str:
        """Create a principal; return its API key (shown once, never stored)."""
        if not NAME.match(name):
            raise InputError(f"principal name {name!r} must match {NAME.pattern}")
        quota = quota or Quota()
        quota.check()
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO principals (name, role, key_sha256, created_at, max_running, "
                    "max_queued) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, role.value, digest(key), utcnow().isoformat(), *quota))
        except sqlite3.IntegrityError as exc:
            raise InputError(f"principal {name!r} already exists") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot add principal {name!r}: {exc}") from exc
        return key

    def revoke(self, name: str) -> None:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE principals SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (utcnow().isoformat(), name))
        if cursor.rowcount != 1:
            raise NotFoundError(f"no active principal named {name!r}")

    def quota(self, name: str) -> Quota:
        """The principal's own quota (all None: the defaults; so for an unknown name too)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT max_running, max_queued FROM principals "
                                       "WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the quota of {name!r}: {exc}") from exc
        return Quota() if row is None else Quota(*row)

    def quotas(self) -> dict[str, Quota]:
        """Every principal's own quota, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, max_running, max_queued FROM principals").fetchall()
        return {row[0]: Quota(row[1], row[2]) for row in rows}

    def set_quota(self, name: str, quota: Quota) -> None:
        """Give a principal its own quota (None fields: back to the defaults). A running
        service applies it from the principal's next submission on."""
        quota.check()
        try:
            with self._lock:
                cursor = self._db.execute(
                    "UPDATE principals SET max_running = ?, max_queued = ? WHERE name = ?",
                    (*quota, name))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot set the quota of {name!r}: {exc}") from exc
        if cursor.rowcount != 1:
            raise NotFoundError(f"no principal named {name!r}")

    def list(self) -> list[Principal]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, role, created_at, revoked_at FROM principals ORDER BY name"
            ).fetchall()
        return [Principal(name=r[0], role=Role(r[1]), created_at=datetime.fromisoformat(r[2]),
                          revoked=r[3] is not None) for r in rows]

    def active(self, name: str) -> Principal | None:
        """The principal named ``name`` if it is not revoked, else None."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, created_at FROM principals "
                "WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone()
        if row is None:
            return None
        return Principal(name=row[0], role=Role(row[1]),
                         created_at=datetime.fromisoformat(row[2]))

    def authenticate(self, key: str) -> Principal | None:
        """The active principal holding ``key``, or None (unknown and revoked alike); with its
        own quota, so what its requests may hold is known from their heads."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, created_at, max_running, max_queued FROM principals "
                "WHERE key_sha256 = ? AND revoked_at IS NULL", (digest(key),)).fetchone()
        if row is None:
            return None
        return Principal(name=row[0], role=Role(row[1]),
                         created_at=datetime.fromisoformat(row[2]), max_running=row[3],
                         max_queued=row[4])


def _add_quota_columns(db: sqlite3.Connection) -> None:
    """Bring a table made before quotas up to ``SCHEMA``. Idempotent; two processes opening
    one database at once take turns on the write lock, and the second finds the columns."""
    if not _missing_quota_columns(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for column in _missing_quota_columns(db):  # again, under the lock
            db.execute(f"ALTER TABLE principals ADD COLUMN {column} INTEGER")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _missing_quota_columns(db: sqlite3.Connection) -> list[str]:
    present = {row[1] for row in db.execute("PRAGMA table_info(principals)")}
    return [column for column in QUOTA_COLUMNS if column not in present]
