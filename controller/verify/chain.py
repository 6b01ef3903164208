"""Verifying an exported receipt log: signatures, shapes, sequence, the hash chain, one
receipt per submission, the key schedule, and any further checks the caller composes in
(a checkpoint, the code of a submission)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.dsse import (
    Receipt,
    VerificationError,
    envelope_payload,
    open_receipt,
    payload_digest,
    strict_json,
)
from controller.verify.keys import KeySchedule
from controller.verify.report import Entry, LogCheck, Problem, Report

__all__ = ["CodeCheck", "Entry", "LogCheck", "Problem", "Report", "verify_log"]

_UNKNOWN = object()  # the digest the next receipt must cite cannot be known


def verify_log(lines: Iterable[str], keys: dict[str, Ed25519PublicKey], *,
               first_seq: int = 1, checks: Sequence[LogCheck] = ()) -> Report:
    """Check every receipt, then that sequences are contiguous, each cites its predecessor,
    no submission has two receipts and each is signed by the key active at its sequence.

    The log must start at ``first_seq``: by default the genesis receipt (sequence 1, no
    previous digest), so a log missing its first receipts does not verify. A later
    ``first_seq`` checks a tail of the log, whose first link (and first key) cannot be
    checked here.

    A receipt that fails is reported by its sequence number (or, when its payload cannot be
    read, by the sequence expected at that line), and the chain resumes after it.
    """
    report = Report()
    chain = _Chain(first_seq)
    every: list[LogCheck] = [chain, _OneReceiptEach(), KeySchedule(keys, genesis=first_seq == 1),
                             *checks]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.checked += 1
        entry = _read(line, keys, line_number=number, index=report.checked,
                      expected=chain.expected)
        for check in every:
            report.problems.extend(check.see(entry))
    for check in every:
        report.problems.extend(check.finish())
    return report


def _read(line: str, keys: dict[str, Ed25519PublicKey], *, line_number: int, index: int,
          expected: int) -> Entry:
    try:
        envelope = strict_json(line)
    except ValueError as exc:
        return Entry(line_number, index, expected, None, None, f"not JSON: {exc}")
    payload = envelope_payload(envelope)
    digest = payload_digest(payload) if payload is not None else None
    try:
        receipt = open_receipt(envelope, keys)
    except VerificationError as exc:
        return Entry(line_number, index, expected, digest, None, str(exc))
    return Entry(line_number, index, receipt.sequence, digest, receipt)


class _Chain:
    """Sequences contiguous from ``first_seq``; each receipt cites the digest of the one
    before it, and the genesis receipt cites none."""

    def __init__(self, first_seq: int) -> None:
        self.expected = first_seq
        # None is a real value here (the genesis receipt cites no predecessor); _UNKNOWN is not.
        self.previous: str | object | None = None if first_seq == 1 else _UNKNOWN

    def see(self, entry: Entry) -> list[Problem]:
        if entry.receipt is None:
            self.expected += 1
            self.previous = _UNKNOWN
            return [Problem(entry.line, entry.sequence, entry.error)]
        problem = self._link(entry, entry.receipt)
        self.expected = entry.sequence + 1
        self.previous = entry.digest
        return [problem] if problem is not None else []

    def _link(self, entry: Entry, receipt: Receipt) -> Problem | None:
        sequence = entry.sequence
        if sequence != self.expected:
            return Problem(entry.line, sequence, (
                f"sequence {sequence} where {self.expected} was expected "
                "(a receipt is missing, repeated or out of order)"))
        cited = receipt.predicate["previous_receipt_digest"]
        if self.previous is not _UNKNOWN and cited != self.previous:
            return Problem(entry.line, sequence, (
                "previous_receipt_digest does not match the receipt before it (chain broken)"
                if self.previous is not None else
                "the first receipt of a log must cite no previous receipt"))
        return None

    def finish(self) -> list[Problem]:
        return []


class _OneReceiptEach:
    """A submission ends once, so it has one receipt: a second one is a forgery or a replay."""

    def __init__(self) -> None:
        self.first: dict[str, Entry] = {}

    def see(self, entry: Entry) -> list[Problem]:
        if entry.receipt is None:
            return []
        submission = entry.receipt.submission_id
        earlier = self.first.setdefault(submission, entry)
        if earlier is entry:
            return []
        return [Problem(entry.line, entry.sequence, (
            f"submission {submission} already has a receipt (seq {earlier.sequence}, line "
            f"{earlier.line}): a submission has exactly one"))]

    def finish(self) -> list[Problem]:
        return []


class CodeCheck:
    """The receipt of ``submission_id`` names ``code`` as its subject: the sha256 of these
    bytes is the digest of the code subject (``submission/<id>/main.<suffix>``)."""

    def __init__(self, submission_id: str, code: bytes) -> None:
        self.submission_id = submission_id
        self.sha256 = hashlib.sha256(code).hexdigest()
        self.found: list[Entry] = []

    @property
    def matched(self) -> list[int]:
        """Sequences of the submission's receipts whose code subject is these bytes."""
        return [entry.sequence for entry in self.found if self.sha256 in self._digests(entry)]

    def see(self, entry: Entry) -> list[Problem]:
        if entry.receipt is not None and entry.receipt.submission_id == self.submission_id:
            self.found.append(entry)
        return []

    def finish(self) -> list[Problem]:
        if not self.found:
            return [Problem(None, None, f"no verified receipt of submission "
                                        f"{self.submission_id} in this log")]
        return [problem for entry in self.found if (problem := self._compare(entry))]

    def _compare(self, entry: Entry) -> Problem | None:
        recorded = self._digests(entry)
        if self.sha256 in recorded:
            return None
        said = f"records code sha256 {recorded[0]}" if recorded else "names no code subject"
        return Problem(entry.line, entry.sequence, (
            f"the receipt of submission {self.submission_id} {said}, but the file's sha256 is "
            f"{self.sha256}"))

    def _digests(self, entry: Entry) -> list[str]:
        subjects = entry.receipt.statement["subject"] if entry.receipt is not None else []
        prefix = f"submission/{self.submission_id}/main."
        return [str(subject["digest"]["sha256"]) for subject in subjects
                if subject["name"].startswith(prefix)]
