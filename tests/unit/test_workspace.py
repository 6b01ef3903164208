"""Workspace trees: scans never follow symlinks, diffs flag hazards, copies stay inside."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.adapters.fs.trees import add_files, copy_tree, scan
from controller.core.models import ChangeKind, SubmittedFile
from controller.core.trees import MAX_LINK_HOPS, diff_trees, escapes, resolves_outside, tree_digest
from controller.errors import InputError

LIMIT = 1 << 20


def write(root: Path, path: str, text: str = "x") -> Path:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


@pytest.mark.parametrize(("path", "target", "expected"), [
    ("a", "/etc/passwd", True),
    ("a", "../x", True),
    ("d/a", "../x", False),
    ("d/a", "../../x", True),
    ("d/a", "./b/../../..", True),
    ("a", "b/c", False),
    ("d/e/a", "../../f", False),
])
def test_escapes(path: str, target: str, expected: bool) -> None:
    assert escapes(path, target) is expected


def test_diff_reports_changes_and_hazards(tmp_path: Path) -> None:
    before_dir, after_dir = tmp_path / "before", tmp_path / "after"
    for root in (before_dir, after_dir):
        write(root, "keep.txt", "same")
        write(root, "edit.txt", "old")
        write(root, "gone.txt")
    before = scan(before_dir, hash_limit=LIMIT)
    write(after_dir, "edit.txt", "new")
    (after_dir / "gone.txt").unlink()
    write(after_dir, "new/file.txt")
    suid = write(after_dir, "suid")
    suid.chmod(0o4755)
    os.symlink("/etc/shadow", after_dir / "out")
    os.symlink("keep.txt", after_dir / "in")
    os.link(after_dir / "keep.txt", after_dir / "hard")
    os.mkfifo(after_dir / "fifo")
    diff = diff_trees(before, scan(after_dir, hash_limit=LIMIT))
    kinds = {change.path: change.kind for change in diff.changes}
    assert kinds["edit.txt"] is ChangeKind.MODIFIED
    assert kinds["gone.txt"] is ChangeKind.DELETED
    assert kinds["new/file.txt"] is ChangeKind.CREATED
    assert "keep.txt" not in kinds
    assert diff.setuid_files == ("suid",)
    assert diff.escaping_symlinks == ("out",)
    assert set(diff.hardlinks) == {"hard", "keep.txt"}
    assert diff.special_files == ("fifo",)
    assert diff.summary("").deleted == 1


def test_a_symlink_escaping_through_another_symlink_is_flagged(tmp_path: Path) -> None:
    # Each link's text stays inside; resolved by the kernel, t lands three levels up.
    os.symlink(".", tmp_path / "s")
    os.symlink("s/s/s/../../..", tmp_path / "t")
    assert not escapes("t", "s/s/s/../../..")
    assert os.path.realpath(tmp_path / "t") == str(tmp_path.parent.parent.parent)
    after = scan(tmp_path, hash_limit=LIMIT)
    assert resolves_outside("t", after) and not resolves_outside("s", after)
    assert diff_trees({}, after).escaping_symlinks == ("t",)


def test_symlinks_resolving_inside_the_tree_are_not_flagged(tmp_path: Path) -> None:
    write(tmp_path, "d/e/file")
    os.symlink("d/e", tmp_path / "de")
    os.symlink("../de/file", tmp_path / "d" / "f")  # d/f -> de/file, through another link
    os.symlink("de/..", tmp_path / "up")  # de/.. is d: still inside
    os.symlink("missing/x", tmp_path / "dangling")
    assert diff_trees({}, scan(tmp_path, hash_limit=LIMIT)).escaping_symlinks == ()


def test_symlink_loops_and_deep_chains_count_as_escaping(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    for n in range(MAX_LINK_HOPS + 1):
        os.symlink(f"c{n + 1}", tmp_path / f"c{n}")
    write(tmp_path, f"c{MAX_LINK_HOPS + 1}")
    after = scan(tmp_path, hash_limit=LIMIT)
    assert resolves_outside("a", after) and resolves_outside("c0", after)
    assert not resolves_outside(f"c{MAX_LINK_HOPS - 1}", after)


def test_scan_does_not_read_files_beyond_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "sparse"
    with big.open("wb") as handle:
        handle.truncate(1 << 40)  # a sparse terabyte
    entry = scan(tmp_path, hash_limit=LIMIT)["sparse"]
    assert entry.sha256 is None and entry.size == 1 << 40


def test_copy_keeps_symlinks_as_links_and_never_follows_them(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret", "host secret")
    source = tmp_path / "src"
    write(source, "a.txt", "a")
    os.symlink(outside, source / "link")
    os.symlink(outside.parent, source / "dirlink")
    copy_tree(source, tmp_path / "dst")
    copied = tmp_path / "dst"
    assert os.readlink(copied / "link") == str(outside)
    assert stat.S_ISLNK(os.lstat(copied / "dirlink").st_mode)
    assert tree_digest(scan(source, hash_limit=LIMIT)) == tree_digest(scan(copied,
                                                                            hash_limit=LIMIT))


def test_add_files_refuses_paths_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ws"
    root.mkdir()
    os.symlink(outside, root / "escape")
    with pytest.raises(InputError, match="escape"):
        add_files(root, (SubmittedFile(path="escape/x", content="boom"),))
    assert not (outside / "x").exists()
    add_files(root, (SubmittedFile(path="d/e/f.txt", content="ok", mode=0o600),))
    assert (root / "d/e/f.txt").read_text() == "ok"
    assert stat.S_IMODE((root / "d/e/f.txt").stat().st_mode) == 0o600


@pytest.mark.parametrize("path", ["../x", "/etc/x", "a/../../x", "a\x00b", "a//b", "./a"])
def test_submitted_paths_must_stay_inside(path: str) -> None:
    with pytest.raises(ValueError, match="relative"):
        SubmittedFile(path=path, content="")


def test_remove_tree_handles_depth_past_path_max_and_keeps_link_targets(tmp_path: Path) -> None:
    from controller.adapters.fs.trees import remove_tree

    outside = write(tmp_path, "outside/keep.txt", "kept")
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(2500):  # 2500 levels of "d/": far past PATH_MAX (4096)
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    write_into = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.close(write_into)
    os.close(fd)
    os.symlink(outside.parent, root / "link")
    write(root, "f.txt")
    remove_tree(root)
    assert not root.exists()
    assert outside.read_text() == "kept"
