"""Trees as the core sees them: entries as ``lstat`` saw them, diffs, digests, and whether a
link leads outside its tree. Pure: the walking and copying are ``adapters.fs.trees``."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from controller.core import untrusted
from controller.core.models import ChangeKind, Diff, EntryType, FileChange

MAX_TREE_PATH = 3000  # bytes of a path relative to the tree: PATH_MAX less room for the root


MAX_LINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)


PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Entry:
    """One path of a tree, as ``lstat`` saw it."""

    type: EntryType
    mode: int
    size: int
    nlink: int
    sha256: str | None = None
    link_target: str | None = None
    uid: int = -1  # the owner (-1: not read); no part of a diff or a digest

    def same_as(self, other: Entry) -> bool:
        return (self.type, self.mode, self.sha256, self.link_target, self.size) == (
            other.type, other.mode, other.sha256, other.link_target, other.size)


def escapes(path: str, target: str) -> bool:
    """Whether a symlink at ``path`` (relative to the root) points outside the root."""
    if target.startswith("/"):
        return True
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def resolves_outside(path: str, entries: Mapping[str, Entry]) -> bool:
    """Whether the symlink at ``path`` ends outside the root once resolved against ``entries``.

    ``escapes`` reads only the link's own text, so ``s -> .`` with ``t -> s/s/s/../../..``
    passes it while the kernel resolves ``t`` three levels up. Here every component that is a
    symlink in the tree is expanded in turn, as the kernel would; an absolute target, a ``..``
    above the root or more than ``MAX_LINK_HOPS`` expansions count as leaving (fail closed).
    Components the tree does not hold are taken literally.
    """
    resolved = path.split("/")[:-1]  # the link's own directory: scanned, so never a symlink
    pending = _link_parts(entries.get(path))
    if pending is None:
        return True
    hops = 1
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return True
            resolved.pop()
            continue
        entry = entries.get("/".join((*resolved, part)))
        if entry is not None and entry.type is EntryType.SYMLINK:
            hops += 1
            expansion = _link_parts(entry)
            if hops > MAX_LINK_HOPS or expansion is None:
                return True
            pending = expansion + pending
            continue
        resolved.append(part)
    return False


def _link_parts(entry: Entry | None) -> list[str] | None:
    """A symlink's target as components, or None when it is absolute or unknown."""
    if entry is None or entry.link_target is None or entry.link_target.startswith("/"):
        return None
    return entry.link_target.split("/")


def diff_trees(before: dict[str, Entry], after: dict[str, Entry]) -> Diff:
    """Changes from ``before`` to ``after`` and the hazards found in ``after``."""
    changes: list[FileChange] = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if new is None and old is not None:
            changes.append(_change(path, ChangeKind.DELETED, old))
        elif old is None and new is not None:
            changes.append(_change(path, ChangeKind.CREATED, new))
        elif old is not None and new is not None and not old.same_as(new):
            changes.append(_change(path, ChangeKind.MODIFIED, new))
    return Diff(
        changes=tuple(changes),
        setuid_files=_paths(after, lambda e: e.type is EntryType.FILE
                            and bool(e.mode & (stat.S_ISUID | stat.S_ISGID))),
        device_nodes=_paths(after, lambda e: e.type is EntryType.DEVICE),
        # Both checks: the link's text alone, and its resolution through the tree's links.
        escaping_symlinks=tuple(
            untrusted.name(p) for p, e in sorted(after.items()) if e.type is EntryType.SYMLINK
            and (e.link_target is None or escapes(p, e.link_target)
                 or resolves_outside(p, after))),
        hardlinks=_paths(after, lambda e: e.type is EntryType.FILE and e.nlink > 1),
        special_files=_paths(after, lambda e: e.type is EntryType.OTHER),
        size_after=sum(e.size for e in after.values() if e.type is EntryType.FILE),
        files_after=sum(1 for e in after.values() if e.type is not EntryType.DIR),
    )


def _change(path: str, kind: ChangeKind, entry: Entry) -> FileChange:
    target = entry.link_target
    return FileChange(path=untrusted.name(path), kind=kind, type=entry.type, size=entry.size,
                      mode=entry.mode, sha256=entry.sha256,
                      link_target=None if target is None else untrusted.name(target))


def _paths(entries: dict[str, Entry], predicate: Callable[[Entry], bool]) -> tuple[str, ...]:
    """Recorded (``untrusted.name``) forms of the paths that match, sorted by raw path."""
    return tuple(untrusted.name(path) for path, entry in sorted(entries.items())
                 if predicate(entry))


def tree_digest(entries: dict[str, Entry]) -> str:
    """A digest of a whole tree: paths, types, modes, contents and link targets.

    Names enter as their bytes (any bytes, not only UTF-8: the sandbox chose them)."""
    digest = hashlib.sha256()
    for path, e in sorted(entries.items()):
        digest.update(os.fsencode(path) + f"\0{e.type}\0{e.mode:o}\0{e.sha256 or e.size}\0".encode()
                      + os.fsencode(e.link_target or "") + b"\n")
    return f"sha256:{digest.hexdigest()}"


def as_published(entries: Mapping[str, Entry]) -> dict[str, Entry]:
    """The tree as ``hand_to_root`` leaves it, so a digest taken before publishing holds after."""
    return {path: replace(entry, mode=entry.mode & ~PRIVILEGE_BITS)
            for path, entry in entries.items()}
