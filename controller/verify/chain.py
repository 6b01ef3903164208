"""Verifying an exported receipt log: signatures, shapes, sequence and the hash chain."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.dsse import VerificationError, open_envelope, payload_digest

_UNKNOWN = object()  # the digest the next receipt must cite cannot be known


@dataclass(frozen=True)
class Problem:
    line: int
    sequence: int | None
    reason: str

    def __str__(self) -> str:
        where = f"seq {self.sequence}" if self.sequence is not None else "seq ?"
        return f"{where} (line {self.line}): {self.reason}"


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.problems


def verify_log(lines: Iterable[str], keys: dict[str, Ed25519PublicKey], *,
               first_seq: int = 1) -> Report:
    """Check every receipt, then that sequences are contiguous and each cites its predecessor.

    The log must start at ``first_seq``: by default the genesis receipt (sequence 1, no
    previous digest), so a log missing its first receipts does not verify. A later
    ``first_seq`` checks a tail of the log, whose first link cannot be checked here.

    A receipt that fails is reported by its sequence number (or, when its payload cannot be
    read, by the sequence expected at that line), and the chain resumes after it.
    """
    report = Report()
    expected_seq = first_seq
    # None is a real value here (the genesis receipt cites no predecessor); _UNKNOWN is not.
    previous_digest: str | object | None = None if first_seq == 1 else _UNKNOWN
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.checked += 1
        try:
            statement, payload = open_envelope(json.loads(line), keys)
        except (ValueError, VerificationError) as exc:
            report.problems.append(Problem(number, expected_seq, str(exc)))
            expected_seq += 1
            previous_digest = _UNKNOWN
            continue
        predicate = statement["predicate"]
        sequence = predicate["sequence"]
        if sequence != expected_seq:
            report.problems.append(Problem(number, sequence, (
                f"sequence {sequence} where {expected_seq} was expected "
                "(a receipt is missing, repeated or out of order)")))
        elif previous_digest is not _UNKNOWN and predicate.get("previous_receipt_digest") != (
                previous_digest):
            report.problems.append(Problem(number, sequence, (
                "previous_receipt_digest does not match the receipt before it (chain broken)"
                if previous_digest is not None else
                "the first receipt of a log must cite no previous receipt")))
        expected_seq = sequence + 1
        previous_digest = payload_digest(payload)
    return report
