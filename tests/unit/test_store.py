"""The store: append-only logs, one receipt per terminal state, compare-and-swap commits."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from controller.adapters.store.schema import SCHEMA_VERSION
from controller.adapters.store.submissions import Store
from controller.core.lifecycle import advanced
from controller.core.models import FileChange, Phase, State, Submission
from controller.core.records import changes_digest
from controller.errors import CommitConflictError, IllegalTransitionError, StoreError
from tests.conftest import python


def sub(n: int = 1) -> Submission:
    return Submission(id=f"s{n}", trace_id="t", request=python("print(1)"), code_sha256="0")


def finish(store: Store, submission: Submission, target: State,
           swap: tuple[str, str, int, int, str] | None = None, fail: Exception | None = None,
           **changes: object) -> Submission:
    """End ``submission`` in one terminal transaction as the service's sealer does, with a
    stand-in receipt naming its place in the log (``fail``: the signing fails)."""
    with store.terminal() as tx:
        if swap is not None:
            tx.swap_version(*swap)
        ended = advanced(submission, target, **changes, receipt_seq=tx.sequence)
        if fail is not None:
            raise fail
        tx.append(submission, ended, f'{{"seq":{tx.sequence},"prev":"{tx.previous}"}}',
                  f"d{tx.sequence}")
    return ended


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


def test_finish_writes_state_and_receipt_together(store: Store) -> None:
    first = sub(1)
    store.insert(first)
    moved = store.move(first, State.DRY_RUN)
    ended = finish(store, moved, State.DENIED, reason="no")
    assert ended.receipt_seq == 1
    assert store.get("s1") == ended
    assert store.receipts() == [(1, '{"seq":1,"prev":"None"}')]
    second = sub(2)
    store.insert(second)
    finish(store, second, State.DENIED)
    assert store.receipts(since_seq=1) == [(2, '{"seq":2,"prev":"d1"}')]
    assert store.transitions("s1") == [(None, "received"), ("received", "dry_run"),
                                       ("dry_run", "denied")]


def test_illegal_and_terminal_moves_are_refused(store: Store) -> None:
    first = sub()
    store.insert(first)
    with pytest.raises(IllegalTransitionError):
        store.move(first, State.RUNNING)
    with pytest.raises(StoreError, match="terminal"):
        store.move(first, State.DENIED)
    ended = finish(store, first, State.DENIED)
    with pytest.raises(IllegalTransitionError):
        finish(store, ended, State.DENIED)
    assert store.receipt_count() == 1


def test_a_failing_seal_leaves_no_terminal_state(store: Store) -> None:
    first = sub()
    store.insert(first)

    with pytest.raises(OSError, match="disk full"):
        finish(store, first, State.DENIED, fail=OSError("disk full"))
    assert store.get("s1") == first and store.receipt_count() == 0


def test_receipts_and_transitions_are_append_only(store: Store, tmp_path: Path) -> None:
    first = sub()
    store.insert(first)
    finish(store, first, State.DENIED)
    raw = sqlite3.connect(tmp_path / "db.sqlite")
    for statement in ("UPDATE receipts SET envelope = 'x'", "DELETE FROM receipts",
                      "UPDATE transitions SET reason = 'x'", "DELETE FROM transitions"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(statement)
    raw.close()


def test_commit_is_compare_and_swap(store: Store) -> None:
    assert store.workspace_version("w") == 0
    for n in (1, 2):
        store.insert(sub(n))
    winner = store.move(store.move(store.move(store.move(store.move(
        sub(1), State.DRY_RUN), State.ASSESSING), State.RUNNING), State.VALIDATING),
        State.COMMITTING)
    finish(store, winner, State.COMMITTED, ("local", "w", 0, 1, "digest"))
    loser = store.move(store.move(store.move(store.move(store.move(
        sub(2), State.DRY_RUN), State.ASSESSING), State.RUNNING), State.VALIDATING),
        State.COMMITTING)
    with pytest.raises(CommitConflictError):
        finish(store, loser, State.COMMITTED, ("local", "w", 0, 1, "other"))
    assert store.workspace_version("w") == 1
    left = store.get("s2")
    assert left is not None and left.state is State.COMMITTING and store.receipt_count() == 1
    finish(store, loser, State.ROLLED_BACK, reason="conflict")
    assert store.receipt_count() == 2


def test_a_terminal_write_must_be_terminal_and_numbered_in_its_place(store: Store) -> None:
    first = sub()
    store.insert(first)
    with pytest.raises(StoreError, match="cannot be appended"), store.terminal() as tx:
        tx.append(first, advanced(first, State.DENIED, receipt_seq=tx.sequence + 1), "{}", "d")
    assert store.get("s1") == first and store.receipt_count() == 0


def test_a_database_of_an_older_release_is_migrated_in_place(tmp_path: Path) -> None:
    # The first release's workspaces table had no owner column, and no schema version.
    old = sqlite3.connect(tmp_path / "db.sqlite")
    old.executescript("CREATE TABLE workspaces (name TEXT PRIMARY KEY, version INTEGER "
                      "NOT NULL, tree_digest TEXT, updated_at TEXT NOT NULL);"
                      "INSERT INTO workspaces VALUES ('kept', 3, NULL, '2026-01-01');")
    old.close()
    store = Store(tmp_path / "db.sqlite")
    store.insert(sub(1))
    # Nobody ever used it: it keeps its directory, under no principal's name.
    assert store.workspace("", "kept") == (3, "kept")
    assert store.open_workspace("local", "default") == (0, "@local/default")
    store.close()
    db = sqlite3.connect(tmp_path / "db.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    Store(tmp_path / "db.sqlite").close()  # opening again changes nothing


def test_a_version_1_database_gains_sandbox_uids_in_place(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "db.sqlite")
    old.executescript("CREATE TABLE submissions (id TEXT PRIMARY KEY, agent TEXT NOT NULL, "
                      "workspace TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, "
                      "updated_at TEXT NOT NULL, record TEXT NOT NULL);"
                      "PRAGMA user_version = 1;")
    old.close()
    store = Store(tmp_path / "db.sqlite")
    store.insert(sub(1))
    store.insert(sub(2))
    pair = range(10002, 10004)
    assert {store.claim_uid("s1", pair), store.claim_uid("s2", pair)} == set(pair)
    store.close()
    db = sqlite3.connect(tmp_path / "db.sqlite")
    with pytest.raises(sqlite3.IntegrityError):  # the database itself refuses a shared uid
        db.execute("UPDATE submissions SET sandbox_uid = 10002")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_database_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "db.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this release"):
        Store(tmp_path / "db.sqlite")


def test_records_of_an_older_release_are_bounded_in_place(tmp_path: Path) -> None:
    # A version-2 database: records held the request, each diff whole and the outputs.
    changes = [{"path": f"d/{i:05}", "kind": "created", "type": "file", "size": 1, "mode": 420,
                "sha256": "0" * 64, "link_target": None} for i in range(3000)]
    old_record = sub(1).model_dump(mode="json") | {
        "state": "denied", "reason": "x" * 10_000,
        "dry_run_diff": {"changes": changes, "setuid_files": [f"d/{i:05}" for i in range(99)],
                         "device_nodes": [], "escaping_symlinks": [], "hardlinks": [],
                         "special_files": [], "size_after": 3000, "files_after": 3001},
        "stdout": "\ufffd" * 100_000, "stderr": "boom",
        "violations": [f"setuid/setgid file: d/{i:05}" for i in range(99)]}
    old_record["request"]["labels"] = {"k" * 5000: "v", "team": "red"}
    db = sqlite3.connect(tmp_path / "db.sqlite")
    db.executescript(
        "CREATE TABLE submissions (id TEXT PRIMARY KEY, agent TEXT NOT NULL, workspace TEXT "
        "NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
        "record TEXT NOT NULL, sandbox_uid INTEGER);"
        "CREATE TABLE workspaces (name TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "tree_digest TEXT, updated_at TEXT NOT NULL, owner TEXT);"
        "INSERT INTO workspaces VALUES ('default', 2, 'abc', '2026-01-01', 'local');"
        "PRAGMA user_version = 2;")
    db.execute("INSERT INTO submissions VALUES ('s1', 'local', 'default', 'denied', ?, ?, ?, "
               "NULL)", (old_record["created_at"], old_record["updated_at"],
                         json.dumps(old_record)))
    db.commit()
    db.close()

    store = Store(tmp_path / "db.sqlite")
    found = store.get("s1")
    assert found is not None and found.dry_run_diff is not None
    assert (found.dry_run_diff.created, found.dry_run_diff.setuid_files) == (3000, 99)
    assert len(found.dry_run_diff.hazard_sample) == 20
    assert len(found.reason) < 2100 and len(found.violations) == 50
    assert found.violations[-1] == "… and 50 more"
    assert found.request.labels == {"team": "red"}
    assert len(found.stdout.encode()) <= 3 * 16 * 1024
    every = store.changes("s1", Phase.DRY_RUN, limit=10_000)
    assert [c["path"] for _, c in every] == [c["path"] for c in changes]
    assert changes_digest(FileChange.model_validate(c) for _, c in every) == \
        found.dry_run_diff.changes_sha256
    assert store.output("s1", Phase.DRY_RUN, "stderr") == (b"boom", 4)
    [line] = store.summaries(agent="local")
    assert line.id == "s1" and line.changed == 3000 and len(line.reason) < 400
    # The workspace keeps its directory and its first agent.
    assert store.workspace("local", "default") == (2, "default")
    assert store.workspace("someone-else", "default") is None
    store.close()


def test_a_terminal_handle_kept_past_its_transaction_writes_nothing(store: Store) -> None:
    first = sub()
    store.insert(first)
    with store.terminal() as kept:
        pass
    with pytest.raises(StoreError, match="has ended"):
        kept.append(first, advanced(first, State.DENIED, receipt_seq=kept.sequence), "{}", "d")
    with pytest.raises(StoreError, match="has ended"):
        kept.swap_version("local", "w", 0, 1, "digest")
    assert store.get("s1") == first and store.receipt_count() == 0
