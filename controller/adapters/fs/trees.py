"""Trees on disk: walked with ``lstat`` (never following a symlink), hashed, copied link by
link, handed to the sandbox user or to root, read and removed without trusting their shape."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from controller.core import untrusted
from controller.core.models import (
    MAX_EVIDENCE_ENTRIES,
    EntryType,
    Evidence,
    EvidenceFile,
    SubmittedFile,
)
from controller.core.ports import SANDBOX_UID
from controller.core.trees import MAX_TREE_PATH, PRIVILEGE_BITS, Entry
from controller.errors import InputError, NotFoundError, TreeTooDeepError, WorkspaceError

MAX_READ_BYTES = 16 << 20


_CHUNK = 1 << 20


def scan(root: Path, *, hash_limit: int, max_path: int = MAX_TREE_PATH) -> dict[str, Entry]:
    """Every path under ``root`` (relative, '/'-separated), without following symlinks.

    Files larger than ``hash_limit`` (e.g. a sparse terabyte) are not read: their digest is
    None and their size still counts against the workspace cap. A path past ``MAX_TREE_PATH``
    raises ``TreeTooDeepError`` (past PATH_MAX, no path-based call could reach it).
    """
    entries: dict[str, Entry] = {}
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(root / relative if relative else root) as it:
            for item in it:
                path = f"{relative}/{item.name}" if relative else item.name
                if len(os.fsencode(path)) > max_path:
                    raise TreeTooDeepError(
                        f"the tree has a path longer than {max_path} bytes "
                        f"({path.count('/') + 1} levels deep); it cannot be validated")
                entry = _entry(Path(item.path), item.stat(follow_symlinks=False), hash_limit)
                entries[path] = entry
                if entry.type is EntryType.DIR:
                    stack.append(path)
    return entries


def _entry(path: Path, st: os.stat_result, hash_limit: int) -> Entry:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return Entry(EntryType.SYMLINK, mode, st.st_size, st.st_nlink,
                     link_target=os.readlink(path), uid=st.st_uid)
    if stat.S_ISDIR(st.st_mode):
        return Entry(EntryType.DIR, mode, 0, st.st_nlink, uid=st.st_uid)
    if stat.S_ISREG(st.st_mode):
        digest = _sha256_file(path) if st.st_size <= hash_limit else None
        return Entry(EntryType.FILE, mode, st.st_size, st.st_nlink, sha256=digest,
                     uid=st.st_uid)
    kind = EntryType.DEVICE if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else (
        EntryType.OTHER)
    return Entry(kind, mode, 0, st.st_nlink, uid=st.st_uid)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def evidence_manifest(root: Path, *, hash_limit: int) -> tuple[bytes, Evidence]:
    """The manifest of an evidence directory (every regular file: path, size, digest) as the
    JSON to keep beside it, and its summary: the digest binds the files into the receipt."""
    # The workspace copy sits one level down: its longest paths are a prefix longer.
    entries = scan(root, hash_limit=hash_limit, max_path=MAX_TREE_PATH + 64)
    listed = [EvidenceFile(path=untrusted.name(path), size=entry.size, sha256=entry.sha256)
              for path, entry in sorted(entries.items())
              if entry.type is EntryType.FILE]
    data = json.dumps([item.model_dump() for item in listed], sort_keys=True).encode()
    return data, Evidence(manifest_sha256=hashlib.sha256(data).hexdigest(), files=len(listed),
                          bytes=sum(item.size for item in listed),
                          entries=tuple(listed[:MAX_EVIDENCE_ENTRIES]))


def copy_tree(source: Path, destination: Path, *, budget: int | None = None) -> list[str]:
    """Copy a tree link by link (symlinks stay symlinks; specials are not copied) into a new
    or empty ``destination`` (a fresh mount point is one); return the files left out.

    The copy is root's, so no setuid/setgid bit is carried over. With a ``budget`` (bytes),
    a file that would take the copied total past it is left out: a sparse terabyte costs a
    tmpfs nothing, and its copy would write every byte.
    """
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise WorkspaceError(f"cannot copy into {destination}: it is not empty")
    left_out, spent = [], 0
    for path, entry in sorted(scan(source, hash_limit=-1).items()):
        src, dst = source / path, destination / path
        if entry.type is EntryType.DIR:
            dst.mkdir(mode=0o755)
        elif entry.type is EntryType.SYMLINK and entry.link_target is not None:
            os.symlink(entry.link_target, dst)
        elif entry.type is EntryType.FILE:
            if budget is not None and spent + entry.size > budget:
                left_out.append(path)
                continue
            spent += entry.size
            shutil.copyfile(src, dst, follow_symlinks=False)
        if entry.type in (EntryType.DIR, EntryType.FILE):
            os.chmod(dst, entry.mode & ~PRIVILEGE_BITS)
    return left_out


def add_files(root: Path, files: tuple[SubmittedFile, ...]) -> None:
    """Write submitted files into a run copy, refusing any path through a symlink."""
    for item in files:
        data = item.data()
        target = root / item.path
        for parent in reversed(target.relative_to(root).parents[:-1]):
            current = root / parent
            if current.is_symlink() or (current.exists() and not current.is_dir()):
                raise InputError(f"files: {item.path!r} passes through {parent.as_posix()!r}, "
                                 "which is not a directory in the workspace")
            current.mkdir(exist_ok=True)
        if target.is_symlink() or target.is_dir():
            raise InputError(f"files: {item.path!r} would replace a symlink or directory")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, item.mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(target, item.mode)


def hand_to_sandbox(root: Path, uid: int = SANDBOX_UID) -> None:
    """Let the run's unprivileged user (``uid``, also its gid) write the run copy
    (ownership, never modes)."""
    if os.geteuid() != 0:
        raise WorkspaceError("the controller must run as root to hand a run copy to the "
                             f"sandbox user (uid {uid}); widening modes is not an option")
    os.chown(root, uid, uid)
    for path in scan(root, hash_limit=-1):
        os.chown(root / path, uid, uid, follow_symlinks=False)


def hand_to_root(root: Path) -> None:
    """Take a tree back from the sandbox user: owned by root, no setuid/setgid bit anywhere.

    Published versions and quarantine evidence outlive the run; left owned by uid 10001 they
    would stay writable by whatever that uid runs next, and a privilege bit would survive.
    """
    if os.geteuid() != 0:
        raise WorkspaceError("the controller must run as root to take a tree back from the "
                             "sandbox user")
    entries = scan(root, hash_limit=-1)
    for path, entry in entries.items():
        target = root / path
        os.chown(target, 0, 0, follow_symlinks=False)
        # chown may already drop the bits; chmod states it. Never on a symlink (it would
        # follow), and the parents are directories scan saw, with nothing running in them.
        if entry.type is not EntryType.SYMLINK and entry.mode & PRIVILEGE_BITS:
            os.chmod(target, entry.mode & ~PRIVILEGE_BITS)
    os.chown(root, 0, 0)
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) & ~PRIVILEGE_BITS)


def check_handed_back(root: Path) -> None:
    """``WorkspaceError`` unless every path of ``root`` (and ``root``) is this process's and
    carries no setuid/setgid bit: what ``hand_to_root`` (or a copy by this process) leaves."""
    ours = os.geteuid()
    info = os.lstat(root)
    strays = [path for path, entry in scan(root, hash_limit=-1).items()
              if entry.uid != ours or (entry.type is not EntryType.SYMLINK
                                       and entry.mode & PRIVILEGE_BITS)]
    if info.st_uid != ours or stat.S_IMODE(info.st_mode) & PRIVILEGE_BITS or strays:
        raise WorkspaceError(f"{len(strays) or 1} path(s) of the tree to publish are not the "
                             "controller's or keep a setuid/setgid bit; nothing is published")


def read_file(root: Path, path: str) -> bytes:
    """A regular file of a version tree, reached without following any symlink."""
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in path:
        raise NotFoundError(f"no file {path!r}: paths are relative, without '.' or '..'")
    current = root
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError as exc:
            raise NotFoundError(f"no file {path!r} in this version") from exc
        if stat.S_ISLNK(mode):
            raise NotFoundError(f"{path!r} passes through a symlink, which is not served")
    if not stat.S_ISREG(mode):
        raise NotFoundError(f"{path!r} is not a regular file")
    fd = os.open(current, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise InputError(f"{path!r} is over {MAX_READ_BYTES} bytes; it is not served whole")
    return data


def remove_tree(root: Path) -> None:
    """Remove a tree of any depth: descend by directory descriptor (never a full path, which
    a hostile tree can make longer than PATH_MAX), holding one descriptor at a time, without
    recursion and without following a symlink."""
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(root)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    current, names = os.open(root, flags), list[str]()
    try:
        while True:
            child = _empty_out(current)
            if child is not None:  # a subdirectory: go down into it
                fd = os.open(child, flags, dir_fd=current)
                os.close(current)
                current, names = fd, [*names, child]
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=current)
            os.close(current)
            current = parent
            os.rmdir(names.pop(), dir_fd=current)
    finally:
        os.close(current)
    os.rmdir(root)


def _empty_out(directory: int) -> str | None:
    """Unlink every non-directory in ``directory``; return a subdirectory's name, if any."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            os.unlink(entry.name, dir_fd=directory)
    return None
