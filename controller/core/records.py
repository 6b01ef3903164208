"""What a submission's record keeps, bounded whatever the sandbox or the caller sent.

Pure. A record is read on hot paths (listings, the approvals queue, the sweeper), so every
value whose size someone else chooses is cut here to a preview, a count or a digest; the
whole of a diff or an output is kept apart and fetched a page at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import rfc8785

from controller.core import untrusted
from controller.core.frozen import Frozen
from controller.core.models import (
    MAX_REASON_CHARS,
    MAX_VIOLATIONS,
    OUTPUT_PREVIEW_BYTES,
    FileChange,
    Submission,
)

SUMMARY_REASON_CHARS = 300


def change_json(change: FileChange) -> dict[str, object]:
    """One change as the diff route serves it and its digest covers (JSON-safe integers)."""
    found: dict[str, object] = untrusted.json_safe(change.model_dump(mode="json"))
    return found


def changes_digest(changes: Iterable[FileChange]) -> str:
    """sha256 of the RFC 8785 JSON array of ``changes`` in path order: what a client that
    fetched every page of the diff recomputes."""
    ordered = sorted(changes, key=lambda change: change.path)
    document: Any = [change_json(change) for change in ordered]
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def preview(data: bytes) -> str:
    """The start of an output as text: undecodable bytes replaced, at most
    ``OUTPUT_PREVIEW_BYTES`` of it."""
    return data[:OUTPUT_PREVIEW_BYTES].decode(errors="replace")


def capped(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def capped_list(items: tuple[str, ...], limit: int = MAX_VIOLATIONS) -> tuple[str, ...]:
    """The first ``limit - 1`` items, each capped, and a last one counting the rest."""
    if len(items) <= limit:
        return tuple(capped(item, 500) for item in items)
    kept = tuple(capped(item, 500) for item in items[:limit - 1])
    return (*kept, f"… and {len(items) - len(kept)} more")


def without_paths(text: str, roots: Iterable[str]) -> str:
    """``text`` with the controller's own directories replaced by a placeholder: a host path
    says nothing a client or a verifier needs, and tells an attacker the layout."""
    for root in sorted({r.rstrip("/") for r in roots if r.strip("/")}, key=len, reverse=True):
        text = text.replace(root, "<data>")
    return text


@dataclass(frozen=True)
class RequestPreview:
    """What an approver sees of a request in the queue; the whole is a route away."""

    code: str  # the first characters
    code_chars: int
    files: tuple[str, ...]  # the first paths
    files_count: int


class SubmissionSummary(Frozen):
    """One line of a listing: a few hundred bytes, whatever the submission did."""

    id: str
    state: str
    reason: str
    agent: str
    language: str
    workspace: str
    profile: str
    created_at: datetime
    updated_at: datetime
    exit_code: int | None = None
    limits_hit: tuple[str, ...] = ()
    changed: int | None = None
    receipt_seq: int | None = None


def summarize(submission: Submission) -> SubmissionSummary:
    """The listing line of ``submission``: the last run's exit and limits, and its changes."""
    request = submission.request
    run = submission.bounded_run or submission.dry_run
    diff = submission.bounded_run_diff or submission.dry_run_diff
    return SubmissionSummary(
        id=submission.id, state=submission.state.value,
        reason=capped(submission.reason, SUMMARY_REASON_CHARS), agent=request.agent,
        language=request.language.value, workspace=request.workspace,
        profile=request.profile, created_at=submission.created_at,
        updated_at=submission.updated_at,
        exit_code=run.exit_code if run is not None else None,
        limits_hit=tuple(limit.value for limit in run.limits_hit) if run is not None else (),
        changed=diff.changed if diff is not None else None,
        receipt_seq=submission.receipt_seq)
