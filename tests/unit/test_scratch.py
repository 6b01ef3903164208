"""Scratch filesystems: real tmpfs mounts (the controller and its tests run as root)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.adapters.fs.tmpfs import mount_tmpfs, mounts_under, release
from controller.adapters.fs.trees import remove_tree, scan
from controller.core.trees import MAX_TREE_PATH
from controller.errors import TreeTooDeepError, WorkspaceError


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "run dir"  # a space: mountinfo escapes it
    release(tmp_path)


def test_the_tmpfs_is_capped_in_bytes(scratch: Path) -> None:
    mount_tmpfs(scratch / "work", size_bytes=1 << 20, inodes=64)
    with pytest.raises(OSError) as caught, (scratch / "work" / "fill").open("wb") as handle:
        for _ in range(4):
            handle.write(b"0" * (1 << 20))
            handle.flush()
    assert caught.value.errno == errno.ENOSPC


def test_the_tmpfs_is_capped_in_inodes(scratch: Path) -> None:
    mount_tmpfs(scratch / "work", size_bytes=1 << 20, inodes=20)
    with pytest.raises(OSError) as caught:
        for n in range(100):
            (scratch / "work" / f"f{n}").touch()
    assert caught.value.errno == errno.ENOSPC
    assert 10 < n < 20  # the root takes an inode too


def test_a_zero_size_is_one_page_never_unlimited(scratch: Path) -> None:
    mount_tmpfs(scratch / "work", size_bytes=0, inodes=16)
    with pytest.raises(OSError) as caught:
        (scratch / "work" / "f").write_bytes(b"0" * (1 << 20))
    assert caught.value.errno == errno.ENOSPC


def test_release_unmounts_everything_below_deepest_first(scratch: Path) -> None:
    mount_tmpfs(scratch / "work", size_bytes=1 << 20, inodes=64)
    mount_tmpfs(scratch / "work" / "inner", size_bytes=1 << 20, inodes=64)
    mount_tmpfs(scratch / "code", size_bytes=1 << 20, inodes=64)
    (scratch / "work" / "inner" / "f").write_text("x")
    found = mounts_under(scratch)
    assert found[0] == scratch / "work" / "inner" and set(found) == {
        scratch / "work", scratch / "work" / "inner", scratch / "code"}
    release(scratch)
    assert mounts_under(scratch) == []
    assert list((scratch / "work").iterdir()) == []  # the tree went with its filesystem
    release(scratch)  # nothing mounted: a no-op


def test_a_tree_too_deep_to_walk_is_refused_by_name(tmp_path: Path) -> None:
    current = tmp_path
    for _ in range(MAX_TREE_PATH // 2 + 2):
        current = current / "d"
        current.mkdir()
    try:
        with pytest.raises(TreeTooDeepError, match="longer than 3000 bytes"):
            scan(tmp_path, hash_limit=0)
    finally:
        remove_tree(tmp_path / "d")  # pytest's own cleanup recurses, and would hit the limit


def test_mounts_are_never_looked_for_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").symlink_to("/")
    with pytest.raises(WorkspaceError, match="is a symlink"):
        release(tmp_path / "elsewhere")
