"""Workspaces on disk: one directory of versions per workspace, checked out into run copies
and published by one rename.

Layout under ``<data>/workspaces/<dir>/``: one directory per version (``v/<n>``). The
database is the truth about which version is current; a version directory the database does
not know (a crash between rename and commit) is an orphan, and ``publish`` replaces it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from controller.adapters.fs.trees import (
    add_files,
    check_handed_back,
    copy_tree,
    remove_tree,
)
from controller.core.models import SubmittedFile
from controller.errors import WorkspaceError


class Workspaces:
    """Version trees of every workspace under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def version_dir(self, name: str, version: int) -> Path:
        return self.root / name / "v" / str(version)

    def ensure(self, name: str) -> None:
        """Create version 0 (empty) of a workspace the first time it is used."""
        first = self.version_dir(name, 0)
        if not first.exists():
            first.mkdir(parents=True)

    def checkout(self, name: str, version: int, destination: Path,
                 files: tuple[SubmittedFile, ...]) -> None:
        """A private copy of ``version`` plus the submitted files (root's: the caller hands
        it to the sandbox user)."""
        try:
            copy_tree(self.version_dir(name, version), destination)
            add_files(destination, files)
        except OSError as exc:
            hint = (" (it does not fit the profile's workspace_bytes / workspace_files: use a "
                    "profile with room for it)") if exc.errno == errno.ENOSPC else ""
            raise WorkspaceError(f"cannot prepare a copy of {name} v{version}: {exc}"
                                 f"{hint}") from exc

    def publish(self, staging: Path, name: str, version: int) -> Path:
        """Move a validated staging tree (root's, as ``Tmpfs.hand_to_root`` left it) into
        place as ``version``: one rename. A tree that is not the controller's, or keeps a
        privilege bit, is refused (``WorkspaceError``)."""
        check_handed_back(staging)
        target = self.version_dir(name, version)
        if target.exists():
            # Only an orphan of a crash can be here: the caller holds the store's write lock
            # and has checked that the database does not know this version.
            remove_tree(target)
        os.rename(staging, target)
        return target

    def unpublish(self, name: str, version: int) -> None:
        target = self.version_dir(name, version)
        if target.exists():
            remove_tree(target)


