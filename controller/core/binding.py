"""Binding the real run to its dry run: the radius a dry run sets, and the divergence of a
real run from it, computed from what the record keeps and the runs' stored changes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import rfc8785

from controller.core.models import ChangeKind, DiffSummary, FileChange, Observation
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
            "stdout_bytes": observation.stdout.size, "stderr_bytes": observation.stderr.size}


def radius(dry_run: Observation, diff: DiffSummary) -> Radius:
    """The radius of a dry run, from what the record keeps of it."""
    return Radius(paths_sha256=diff.changes_sha256, created=diff.created,
                  modified=diff.modified, deleted=diff.deleted, hazardous=diff.hazardous,
                  totals=totals(dry_run, diff), exit_code=dry_run.exit_code)


def divergence(bound: Radius, dry_changes: Iterable[FileChange],
               real_changes: Iterable[FileChange], real: Observation, real_diff: DiffSummary,
               *, tolerance: float) -> Divergence:
    """The real run against the radius. Both change lists are in path order (as stored)."""
    counts = dict.fromkeys(("created_outside", "modified_outside", "deleted_outside",
                            "kind_changed", "mode_changed"), 0)
    digest, sample, roots = hashlib.sha256(b"["), list[str](), set[str]()
    for index, (path, why) in enumerate(_beyond(dry_changes, real_changes)):
        counts[why] += 1
        digest.update((b"," if index else b"") + rfc8785.dumps(path))
        if len(sample) < DIVERGENCE_SAMPLE:
            sample.append(path)
        root = path.split("/", 1)[0]
        roots.add(root if root in roots or len(roots) < MAX_ROOTS else TOO_MANY_ROOTS)
    digest.update(b"]")
    measured = totals(real, real_diff)
    over = tuple(name for name, allowed in bound.totals.items()
                 if measured[name] > allowed * (1 + tolerance) + SLACK[name])
    return Divergence(**counts, paths_sha256=digest.hexdigest(), sample=tuple(sample),
                      roots=tuple(sorted(roots)),
                      totals_over=over, new_hazard=real_diff.hazardous and not bound.hazardous,
                      exit_changed=real.exit_code != bound.exit_code)


def _beyond(dry_changes: Iterable[FileChange],
            real_changes: Iterable[FileChange]) -> Iterator[tuple[str, str]]:
    """(path, why) for each real change outside the dry run's, by a merge of the two
    path-ordered lists: memory for one change of each, however many there are."""
    dry = iter(dry_changes)
    ahead = next(dry, None)
    for change in real_changes:
        while ahead is not None and ahead.path < change.path:
            ahead = next(dry, None)
        if ahead is None or ahead.path != change.path:
            yield change.path, f"{change.kind}_outside"
        elif (ahead.kind is ChangeKind.DELETED) != (change.kind is ChangeKind.DELETED):
            # One run deleted what the other wrote: not the effect that was assessed.
            yield change.path, f"{change.kind}_outside"
        elif change.kind is not ChangeKind.DELETED and change.type is not ahead.type:
            yield change.path, "kind_changed"
        elif change.kind is not ChangeKind.DELETED and change.mode != ahead.mode:
            yield change.path, "mode_changed"
