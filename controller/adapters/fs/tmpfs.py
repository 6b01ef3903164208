"""Per-run scratch filesystems: a tmpfs the controller mounts for each run's copy.

The run copy behind ``/workspace`` and the code behind ``/sandbox`` each live on their own
tmpfs, mounted on the run directory just before a run and released after it. This gives the
kernel the caps a directory on the data disk cannot have: the workspace can grow to its
profile's ``workspace_bytes`` and ``workspace_files`` and no further (ENOSPC inside the
sandbox, never a full data disk), and the mounts the sandbox sees are the roots of anonymous
filesystems, so ``/proc/self/mountinfo`` names no host path. Releasing is one detach: a
hostile tree (millions of files, paths past PATH_MAX) is never walked to be removed.

mount(2) has no Python binding; it is called through libc, as root (which the controller
already must be, to hand run copies to the sandbox user).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from controller.adapters.fs.trees import hand_to_root, hand_to_sandbox, remove_tree, scan
from controller.core.models import EntryType
from controller.core.trees import PRIVILEGE_BITS
from controller.errors import WorkspaceError

PAGE = os.sysconf("SC_PAGE_SIZE")
MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH, UMOUNT_NOFOLLOW = 0x2, 0x8
MOUNTINFO = Path("/proc/self/mountinfo")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def mount_tmpfs(target: Path, *, size_bytes: int, inodes: int) -> None:
    """Mount a fresh tmpfs on ``target`` (created if missing) holding at most ``size_bytes``
    (rounded up to a page; never 0, which tmpfs reads as "unlimited") in ``inodes`` inodes."""
    pages = max(1, -(-size_bytes // PAGE))
    options = f"size={pages * PAGE},nr_inodes={max(2, inodes)},mode=0755"
    target.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", MS_NOSUID | MS_NODEV,
                   options.encode()) != 0:
        code = ctypes.get_errno()
        raise WorkspaceError(f"cannot mount a scratch tmpfs on {target}: "
                             f"{os.strerror(code)} (the controller must run as root)")


def unmount(target: Path) -> None:
    """Detach ``target``'s mount: its files go once no process holds them, in a sandbox or
    here, and the directory is a plain one again at once."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
        code = ctypes.get_errno()
        if code != errno.EINVAL:  # EINVAL: nothing is mounted there
            raise WorkspaceError(f"cannot unmount the scratch tmpfs on {target}: "
                                 f"{os.strerror(code)}")


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first (the order to release them in).

    ``root`` itself must not be a symlink: released through one, a detach could reach a
    mount somewhere else entirely."""
    if root.is_symlink():
        raise WorkspaceError(f"{root} is a symlink; scratch mounts are looked for only under "
                             "real directories")
    prefix = os.path.realpath(root)
    found = []
    for line in MOUNTINFO.read_bytes().splitlines():
        point = _unescape(os.fsdecode(line.split()[4]))
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def release(root: Path) -> None:
    """Unmount every scratch filesystem at or below ``root`` (left by a run or a crash)."""
    for point in mounts_under(root):
        unmount(point)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    if "\\" not in field:
        return field
    return os.fsdecode(os.fsencode(field).decode("unicode_escape").encode("latin-1"))


class ScratchMounts:
    """The ``Tmpfs`` port on real tmpfs mounts (needs root)."""

    def mount(self, target: Path, *, size_bytes: int, inodes: int) -> None:
        mount_tmpfs(target, size_bytes=size_bytes, inodes=inodes)

    def release(self, root: Path) -> None:
        release(root)

    def mounted(self, root: Path) -> bool:
        return bool(mounts_under(root))

    def hand_to_sandbox(self, root: Path, uid: int) -> None:
        hand_to_sandbox(root, uid)

    def hand_to_root(self, root: Path) -> None:
        hand_to_root(root)


class PlainDirectories:
    """The ``Tmpfs`` port on plain directories, for tests without root or Docker: the same
    lifecycle (fresh and empty when mounted, emptied when released), none of the caps and no
    change of owner."""

    def __init__(self) -> None:
        self._points: set[Path] = set()

    def mount(self, target: Path, *, size_bytes: int, inodes: int) -> None:
        remove_tree(target)
        target.mkdir(parents=True)
        self._points.add(target)

    def release(self, root: Path) -> None:
        for point in sorted(self.under(root), key=lambda path: len(path.parts), reverse=True):
            if point.exists():
                remove_tree(point)  # hostile trees too (paths past PATH_MAX)
                point.mkdir()  # a released mount point stays, empty, as a real one does
            self._points.discard(point)

    def mounted(self, root: Path) -> bool:
        return bool(self.under(root))

    def hand_to_sandbox(self, root: Path, uid: int) -> None:
        """Nothing to hand over: the fake runtime's runs are this process."""

    def hand_to_root(self, root: Path) -> None:
        """The privilege bits go, as they do for real; owners stay (no root to chown)."""
        for path, entry in scan(root, hash_limit=-1).items():
            if entry.type is not EntryType.SYMLINK and entry.mode & PRIVILEGE_BITS:
                os.chmod(root / path, entry.mode & ~PRIVILEGE_BITS)

    def under(self, root: Path) -> list[Path]:
        return [point for point in self._points if point == root or root in point.parents]
