"""One output stream of a sandbox, captured: a capped prefix, its digest and the size.

The program chooses how much it writes; the controller keeps at most ``cap`` bytes of it, and
the digest is of exactly what was kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from controller.core.models import StreamSummary


@dataclass
class Capture:
    """One output stream: a capped prefix, its digest and the bytes seen."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    seen: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, chunk: bytes) -> bool:
        """Keep what fits under the cap; return False once the cap is exceeded."""
        self.seen += len(chunk)
        room = self.cap - len(self.data)
        kept = chunk[: max(room, 0)]
        self.data += kept
        self.digest.update(kept)
        return self.seen <= self.cap

    def summary(self) -> StreamSummary:
        return StreamSummary(size=self.seen, sha256=self.digest.hexdigest(),
                             truncated=self.seen > self.cap)
