"""Ending a submission: the service seals and publishes inside the store's transaction, and
undoes the publication when the transaction does not commit; the store never calls back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.adapters.fs.tmpfs import PlainDirectories
from controller.adapters.fs.workspaces import Workspaces
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.core.models import State, Submission
from controller.errors import CommitConflictError, IllegalTransitionError, WorkspaceError
from controller.service import sealing
from controller.service.sealing import Publication, Sealer
from tests.conftest import python


def committing(store: Store, n: int) -> Submission:
    submission = Submission(id=f"s{n}", trace_id="t", request=python("print(1)"),
                            code_sha256="0")
    store.insert(submission)
    for state in (State.DRY_RUN, State.ASSESSING, State.RUNNING, State.VALIDATING,
                  State.COMMITTING):
        submission = store.move(submission, state)
    return submission


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Store, Workspaces, Sealer]:
    store = Store(tmp_path / "db.sqlite")
    workspaces = Workspaces(tmp_path / "workspaces")
    return store, workspaces, Sealer(store, KeyRing(tmp_path / "keys").signer(), workspaces)


def staged(tmp_path: Path, name: str) -> Path:
    staging = tmp_path / name
    staging.mkdir()
    (staging / "report.txt").write_text(name)
    return staging


def test_a_commit_publishes_the_staged_tree_with_its_receipt(
        parts: tuple[Store, Workspaces, Sealer], tmp_path: Path) -> None:
    store, workspaces, sealer = parts
    _, directory = store.open_workspace("local", "w")
    workspaces.ensure(directory)
    ended = sealer.finish(committing(store, 1), State.COMMITTED, Publication(
        "local", "w", directory, staged(tmp_path, "a"), 0, 1, "digest"))
    assert ended.state is State.COMMITTED and ended.receipt_seq == 1
    assert (workspaces.version_dir(directory, 1) / "report.txt").read_text() == "a"
    assert store.workspace("local", "w") == (1, directory) and store.receipt_count() == 1


def test_a_lost_race_publishes_nothing_and_writes_nothing(
        parts: tuple[Store, Workspaces, Sealer], tmp_path: Path) -> None:
    store, workspaces, sealer = parts
    _, directory = store.open_workspace("local", "w")
    workspaces.ensure(directory)
    first, second = committing(store, 1), committing(store, 2)
    sealer.finish(first, State.COMMITTED, Publication(
        "local", "w", directory, staged(tmp_path, "a"), 0, 1, "d1"))
    with pytest.raises(CommitConflictError):
        sealer.finish(second, State.COMMITTED, Publication(
            "local", "w", directory, staged(tmp_path, "b"), 0, 1, "d2"))
    assert (workspaces.version_dir(directory, 1) / "report.txt").read_text() == "a"
    left = store.get("s2")
    assert left is not None and left.state is State.COMMITTING and store.receipt_count() == 1


def test_a_failure_after_publishing_takes_the_version_back(
        parts: tuple[Store, Workspaces, Sealer], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, workspaces, sealer = parts
    _, directory = store.open_workspace("local", "w")
    workspaces.ensure(directory)

    def fails(point: str) -> None:
        if point == "published":
            raise OSError("the disk went away before the commit")

    monkeypatch.setattr(sealing, "crash_point", fails)
    submission = committing(store, 1)
    with pytest.raises(OSError, match="went away"):
        sealer.finish(submission, State.COMMITTED, Publication(
            "local", "w", directory, staged(tmp_path, "a"), 0, 1, "digest"))
    assert not workspaces.version_dir(directory, 1).exists()
    assert store.get("s1") == submission and store.receipt_count() == 0
    assert store.workspace("local", "w") == (0, directory)


def test_only_a_terminal_state_is_sealed(parts: tuple[Store, Workspaces, Sealer]) -> None:
    store, _, sealer = parts
    with pytest.raises(IllegalTransitionError, match="not terminal"):
        sealer.finish(committing(store, 1), State.VALIDATING)
    assert store.receipt_count() == 0


def test_plain_directories_behave_as_scratch_mounts_do(tmp_path: Path) -> None:
    scratch = PlainDirectories()
    run = tmp_path / "run"
    (run / "work").mkdir(parents=True)
    (run / "work" / "left").write_text("from before")
    scratch.mount(run / "work", size_bytes=1 << 20, inodes=16)
    assert list((run / "work").iterdir()) == []  # fresh and empty
    (run / "work" / "a" / "b").mkdir(parents=True)
    assert scratch.mounted(run) and scratch.mounted(run / "work")
    assert not scratch.mounted(tmp_path / "elsewhere")
    scratch.release(run)
    assert not scratch.mounted(run)
    assert (run / "work").is_dir() and list((run / "work").iterdir()) == []


@pytest.mark.parametrize("left", ["setuid", "owner"])
def test_a_tree_not_handed_back_is_never_published(
        parts: tuple[Store, Workspaces, Sealer], tmp_path: Path, left: str) -> None:
    store, workspaces, sealer = parts
    _, directory = store.open_workspace("local", "w")
    workspaces.ensure(directory)
    staging = staged(tmp_path, "a")
    if left == "setuid":
        (staging / "report.txt").chmod(0o4755)
    elif os.geteuid() == 0:
        os.chown(staging / "report.txt", 10001, 10001)
    else:
        pytest.skip("only root can hand a file to another user")  # CI runs as root
    submission = committing(store, 1)
    with pytest.raises(WorkspaceError, match="nothing is published"):
        sealer.finish(submission, State.COMMITTED, Publication(
            "local", "w", directory, staging, 0, 1, "digest"))
    assert not workspaces.version_dir(directory, 1).exists()
    assert store.get("s1") == submission and store.workspace("local", "w") == (0, directory)
