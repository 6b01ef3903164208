"""Principals and their API keys, in the controller's SQLite database.

A key is shown once, when it is made; only its sha256 is stored (keys are 256-bit random,
so a plain digest is enough to make a stolen table useless).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from controller.errors import InputError, NotFoundError, StoreError
from controller.models import Principal, Role, utcnow
from controller.schema import connect

KEY_PREFIX = "sg_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Principals:
    """Who may call the API, with which role."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, name: str, role: Role) -> str:
        """Create a principal; return its API key (shown once, never stored)."""
        if not NAME.match(name):
            raise InputError(f"principal name {name!r} must match {NAME.pattern}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._lock:
                self._db.execute("INSERT INTO principals VALUES (?, ?, ?, ?, NULL)",
                                 (name, role.value, digest(key), utcnow().isoformat()))
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

    def list(self) -> list[Principal]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, role, created_at, revoked_at FROM principals ORDER BY name"
            ).fetchall()
        return [Principal(name=r[0], role=Role(r[1]), created_at=datetime.fromisoformat(r[2]),
                          revoked=r[3] is not None) for r in rows]

    def authenticate(self, key: str) -> Principal | None:
        """The active principal holding ``key``, or None (unknown and revoked alike)."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, created_at FROM principals "
                "WHERE key_sha256 = ? AND revoked_at IS NULL", (digest(key),)).fetchone()
        if row is None:
            return None
        return Principal(name=row[0], role=Role(row[1]),
                         created_at=datetime.fromisoformat(row[2]))
