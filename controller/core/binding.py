"""Binding the real run to its dry run: the radius a dry run sets, and the divergence of a
real run from it, computed from what the record keeps and the runs' stored changes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import rfc8785

from controller.core.models import ChangeKind, DiffSummary, EntryType, FileChange, Observation
from controller.core.radius import (
    DIVERGENCE_SAMPLE,
    MAX_ROOTS,
    SLACK,
    TOO_MANY_ROOTS,
    Divergence,
    Radius,
)


def totals(observation: Observation, diff: DiffSummary) -> dict[str, int]:
    return {"size_after": diff.size_after,
            "peak_memory_bytes": observation.peak_memory_bytes or 0,
            "peak_pids": observation.peak_pids or 0,
            "cpu_time_ns": observation.cpu_time_ns or 0,
            "loopback_packets": observation.loopback_packets or 0,
            "stdout_bytes": observation.stdout.size, "stderr_bytes": observation.stderr.size}


def radius(dry_run: Observation, diff: DiffSummary,
           changes: Sequence[FileChange] | None = None) -> Radius:
    """The radius of a dry run, from what the record keeps of it and, when at hand, its
    changes (what it wrote binds the bytes the real run may write)."""
    bound = totals(dry_run, diff)
    if changes is not None:
        bound["bytes_written"] = written(changes)
    return Radius(paths_sha256=diff.changes_sha256, created=diff.created,
                  modified=diff.modified, deleted=diff.deleted, hazardous=diff.hazardous,
                  totals=bound, exit_code=dry_run.exit_code)


def divergence(bound: Radius, dry_changes: Iterable[FileChange],
               real_changes: Sequence[FileChange], real: Observation, real_diff: DiffSummary,
               *, tolerance: float | Mapping[str, float]) -> Divergence:
    """The real run against the radius. Both change lists are in path order (as stored);
    ``tolerance``: one fraction for every total, or one per total (``Profile.tolerances``)."""
    counts = dict.fromkeys(("created_outside", "modified_outside", "deleted_outside",
                            "kind_changed", "mode_changed"), 0)
    digest, sample, roots = hashlib.sha256(b"["), list[str](), set[str]()
    links = content = dry_only = 0
    content_roots: set[str] = set()
    for path, why, kind in _beyond(dry_changes, real_changes):
        if why == "dry_only":
            dry_only += 1
            continue
        if why == "content_changed":  # not divergence: what a bundle may want to know
            content += 1
            _add_root(content_roots, path)
            continue
        digest.update((b"," if sum(counts.values()) else b"") + rfc8785.dumps(path))
        counts[why] += 1
        links += why == "created_outside" and kind is EntryType.SYMLINK
        if len(sample) < DIVERGENCE_SAMPLE:
            sample.append(path)
        _add_root(roots, path)
    digest.update(b"]")
    measured = {**totals(real, real_diff), "bytes_written": written(real_changes)}
    # A radius recorded before a total was measured (an older record) does not bind it.
    fraction = tolerance if isinstance(tolerance, Mapping) else dict.fromkeys(SLACK, tolerance)
    over = tuple(name for name, allowed in bound.totals.items()
                 if measured[name] > allowed * (1 + fraction[name]) + SLACK[name])
    # Interfaces other than the loopback are bound by no dry run: it never has one (a
    # profile's network is granted to the real run alone).
    quiet = bound.totals.get("loopback_packets") == 0
    return Divergence(**counts, created_outside_links=links, content_changed=content,
                      content_roots=tuple(sorted(content_roots)), dry_only=dry_only,
                      paths_sha256=digest.hexdigest(), sample=tuple(sample),
                      roots=tuple(sorted(roots)),
                      totals_over=over, new_hazard=real_diff.hazardous and not bound.hazardous,
                      exit_changed=real.exit_code != bound.exit_code,
                      network_new=quiet and measured["loopback_packets"] > 0)


def written(changes: Iterable[FileChange]) -> int:
    """The bytes a run's changes hold (what it created or modified), not the whole tree's."""
    return sum(change.size for change in changes if change.kind is not ChangeKind.DELETED)


def _add_root(roots: set[str], path: str) -> None:
    """Keep ``path``'s top-level name, or ``TOO_MANY_ROOTS`` once ``MAX_ROOTS`` are kept."""
    root = path.split("/", 1)[0]
    roots.add(root if root in roots or len(roots) < MAX_ROOTS else TOO_MANY_ROOTS)


def _beyond(dry_changes: Iterable[FileChange], real_changes: Iterable[FileChange]
            ) -> Iterator[tuple[str, str, EntryType]]:
    """(path, why, type) for each real change outside the dry run's, by a merge of the two
    path-ordered lists: memory for one change of each, however many there are. Also, though
    neither is divergence, each path both wrote with other content (``content_changed``) and
    each dry run change the real run did not make (``dry_only``)."""
    dry = iter(dry_changes)
    ahead = next(dry, None)
    for change in real_changes:
        while ahead is not None and ahead.path < change.path:
            yield ahead.path, "dry_only", ahead.type
            ahead = next(dry, None)
        if ahead is None or ahead.path != change.path:
            yield change.path, f"{change.kind}_outside", change.type
            continue
        if (ahead.kind is ChangeKind.DELETED) != (change.kind is ChangeKind.DELETED):
            # One run deleted what the other wrote: not the effect that was assessed.
            yield change.path, f"{change.kind}_outside", change.type
        elif change.kind is not ChangeKind.DELETED and (
                change.type is not ahead.type or change.link_target != ahead.link_target):
            # Another type, or a link to another place: where the path leads has changed.
            yield change.path, "kind_changed", change.type
        elif change.kind is not ChangeKind.DELETED and change.mode != ahead.mode:
            yield change.path, "mode_changed", change.type
        elif change.type is EntryType.FILE and change.kind is not ChangeKind.DELETED and (
                change.sha256 is None or (change.sha256, change.size) != (ahead.sha256,
                                                                          ahead.size)):
            yield change.path, "content_changed", change.type  # unhashed: assumed changed
        ahead = next(dry, None)
    while ahead is not None:
        yield ahead.path, "dry_only", ahead.type
        ahead = next(dry, None)
