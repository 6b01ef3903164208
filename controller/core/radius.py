"""The blast radius a dry run sets, and how far a real run went beyond it (the records;
``binding`` computes them).

What is assessed (and approved) is what the dry run did; the real run may do less, or the
same with other content (timestamps, random output), never more. Code can always tell the
runs apart (the clock, an approval that takes minutes, the page cache), so hiding the phase
is no defence: binding the real run to the dry run's effects is. The radius is small and
bounded whatever the dry run did: its paths are bound by the digest of the dry run's stored
changes; the comparison walks both runs' changes in path order.
"""

from __future__ import annotations

import hashlib

import rfc8785

from controller.core import untrusted
from controller.core.frozen import Frozen

DIVERGENCE_SAMPLE = 20  # paths a record keeps of the divergence; the digest binds them all
# Top-level names of the diverging paths a record keeps; past that, ``TOO_MANY_ROOTS`` stands
# for the rest, which no relaxing bundle can name (so relaxing fails closed).
MAX_ROOTS = 50
TOO_MANY_ROOTS = "*"
# Above the profile's relative tolerance, a few absolute units are always allowed: a run
# that wrote 10 bytes the first time may write 100 the second.
SLACK = {"size_after": 1 << 20, "bytes_written": 1 << 20, "peak_memory_bytes": 64 << 20,
         "peak_pids": 8, "cpu_time_ns": 1_000_000_000, "loopback_packets": 64,
         "stdout_bytes": 64 << 10, "stderr_bytes": 64 << 10}


class Radius(Frozen):
    """What the dry run did: the bound on what the real run may do."""

    paths_sha256: str  # the dry run's changes (the diff route's digest): the paths allowed
    created: int
    modified: int
    deleted: int
    hazardous: bool
    totals: dict[str, int]  # bytes written, size_after, peaks, cpu time, outputs (``SLACK``)
    exit_code: int | None

    @property
    def digest(self) -> str:
        """sha256 of the radius as RFC 8785 JSON: what an approval and a receipt bind."""
        document = self.model_dump(mode="json")
        return hashlib.sha256(rfc8785.dumps(untrusted.json_safe(document))).hexdigest()


class Divergence(Frozen):
    """How far the real run went beyond the radius; all zero and false: it did not."""

    created_outside: int = 0  # paths the dry run left alone
    created_outside_links: int = 0  # of which symbolic links (a relaxed directory's escape)
    modified_outside: int = 0
    deleted_outside: int = 0
    kind_changed: int = 0  # a path both runs wrote, of another type or link target
    mode_changed: int = 0  # ... or with other permission bits
    paths_sha256: str = ""  # sha256 of the RFC 8785 array of every diverging path, in order
    sample: tuple[str, ...] = ()  # the first paths, at most DIVERGENCE_SAMPLE
    roots: tuple[str, ...] = ()  # top-level names of every diverging path (MAX_ROOTS, sorted)
    totals_over: tuple[str, ...] = ()  # totals past the radius and its tolerance, by name
    new_hazard: bool = False  # the real run left a hazard the dry run did not
    exit_changed: bool = False  # the real run ended with another exit status
    network_new: bool = False  # the real run sent packets; its dry run sent none
    # Not divergence (what was approved covers them), but what a bundle may want to weigh:
    content_changed: int = 0  # paths both runs wrote, with other bytes (timestamps...)
    content_roots: tuple[str, ...] = ()  # their top-level names (MAX_ROOTS, sorted)
    dry_only: int = 0  # changes of the dry run that the real run did not make

    @property
    def outside_paths(self) -> int:
        return (self.created_outside + self.modified_outside + self.deleted_outside
                + self.kind_changed + self.mode_changed)

    @property
    def diverged(self) -> bool:
        return bool(self.outside_paths or self.totals_over or self.new_hazard
                    or self.exit_changed or self.network_new)

    def context(self) -> dict[str, object]:
        """What the commit gate's policies see."""
        return {"outside_paths": self.outside_paths, "created_outside": self.created_outside,
                "created_outside_links": self.created_outside_links,
                "modified_outside": self.modified_outside,
                "deleted_outside": self.deleted_outside, "kind_changed": self.kind_changed,
                "mode_changed": self.mode_changed, "totals_over": len(self.totals_over),
                "outside_roots": list(self.roots),
                "new_hazard": self.new_hazard, "exit_changed": self.exit_changed,
                "network_new": self.network_new, "content_changed": self.content_changed,
                "content_roots": list(self.content_roots), "dry_only": self.dry_only}
