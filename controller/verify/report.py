"""What a walk over a receipt log sees and says: entries, problems, the checks' interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from controller.verify.dsse import Receipt


@dataclass(frozen=True)
class Problem:
    line: int | None  # None: a problem of the whole log (a checkpoint, a missing receipt)
    sequence: int | None
    reason: str

    def __str__(self) -> str:
        if self.line is None:
            return self.reason
        where = f"seq {self.sequence}" if self.sequence is not None else "seq ?"
        return f"{where} (line {self.line}): {self.reason}"


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.problems


@dataclass(frozen=True)
class Entry:
    """One receipt of the log as the walk read it."""

    line: int
    index: int  # position among the log's receipts, from 1
    sequence: int  # the receipt's own; when it cannot be read, the one expected there
    digest: str | None  # sha256 of the payload bytes, verified or not; None if undecodable
    receipt: Receipt | None  # None when signature or shape failed
    error: str = ""  # why ``receipt`` is None


class LogCheck(Protocol):
    """One property of the log, checked entry by entry; checks compose, none knows another."""

    def see(self, entry: Entry) -> list[Problem]:
        """Problems this entry shows, given the ones before it."""
        ...

    def finish(self) -> list[Problem]:
        """Problems only the whole log shows."""
        ...
