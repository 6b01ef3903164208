"""What a receipt says: the in-toto Statement for one terminal submission.

Pure: builds the statement and its canonical bytes (RFC 8785). Signing and storing happen in
``signing`` and ``store``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from controller import __version__
from controller.core import untrusted
from controller.core.models import DiffSummary, Observation, Submission, SubmittedFile, utcnow
from controller.core.radius import Divergence, Radius
from controller.verify.formats import PREDICATE_TYPE, STATEMENT_TYPE


def statement(
    submission: Submission,
    *,
    sequence: int,
    previous_digest: str | None,
    profile_name: str,
) -> dict[str, Any]:
    """The in-toto Statement v1 of a submission in its terminal state."""
    request = submission.request
    return {
        **_statement_head(submission),
        "predicate": {
            "submission_id": submission.id,
            "trace_id": submission.trace_id,
            "agent": request.agent,
            "state": submission.state.value,
            "reason": submission.reason,
            "request": {
                "language": request.language.value,
                "workspace": request.workspace,
                "profile": request.profile,
                "labels": dict(request.labels),
                "files": [file_record(f) for f in request.files],
            },
            "decisions": [d.model_dump(mode="json") for d in submission.decisions],
            "profile": {"name": profile_name, "digest": submission.profile_digest},
            "image_id": submission.image_id,
            "dry_run": observation_summary(submission.dry_run, submission.dry_run_diff),
            "bounded_run": observation_summary(submission.bounded_run,
                                               submission.bounded_run_diff),
            "radius": radius_record(submission.radius),
            "divergence": divergence_record(submission.divergence),
            "violations": list(submission.violations),
            "approval": submission.approval.model_dump(mode="json")
            if submission.approval else None,
            "workspace": _workspace(submission),
            "evidence": submission.evidence.model_dump(mode="json")
            if submission.evidence is not None else None,
            "timestamps": {"created": submission.created_at.isoformat(),
                           "finished": utcnow().isoformat()},
            "controller_version": __version__,
            "sequence": sequence,
            "previous_receipt_digest": previous_digest,
        },
    }


def radius_record(radius: Radius | None) -> dict[str, Any] | None:
    """What the dry run bound the real run to, with the digest an approval cites."""
    if radius is None:
        return None
    return {**untrusted.json_safe(radius.model_dump(mode="json")), "sha256": radius.digest}


def divergence_record(divergence: Divergence | None) -> dict[str, Any] | None:
    """How far the real run went beyond its radius: counts, the first paths and the digest
    of them all (every diverging path, in order), the totals past the tolerance."""
    if divergence is None:
        return None
    found: dict[str, Any] = untrusted.json_safe({
        **divergence.model_dump(mode="json"), "outside_paths": divergence.outside_paths,
        "diverged": divergence.diverged})
    return found


def file_record(item: SubmittedFile) -> dict[str, Any]:
    """What ran beside the code: a submitted file's path, mode and the digest of its bytes."""
    return {"path": untrusted.name(item.path), "mode": f"{item.mode:04o}",
            "sha256": hashlib.sha256(item.data()).hexdigest()}


def minimal_statement(submission: Submission, *, sequence: int, previous_digest: str | None,
                      failure: str) -> dict[str, Any]:
    """The receipt of a submission whose full statement could not be built or encoded: the
    terminal state, a reason naming the failure, and the digests that are plain values.

    Whatever the sandbox left in the record, a terminal state never goes without a receipt.
    """
    reason = f"the full receipt could not be built ({failure}); {submission.reason}"
    return {
        **_statement_head(submission),
        "predicate": untrusted.scrub({
            "minimal": True,
            "submission_id": submission.id,
            "trace_id": submission.trace_id,
            "agent": submission.request.agent,
            "state": submission.state.value,
            "reason": reason,
            "profile": {"name": submission.request.profile,
                        "digest": submission.profile_digest},
            "image_id": submission.image_id,
            "workspace": _workspace(submission),
            "timestamps": {"created": submission.created_at.isoformat(),
                           "finished": utcnow().isoformat()},
            "controller_version": __version__,
            "sequence": sequence,
            "previous_receipt_digest": previous_digest,
        }),
    }


def _statement_head(submission: Submission) -> dict[str, Any]:
    """The statement's type, subject (the submitted code by digest) and predicate type."""
    suffix = "py" if submission.request.language.value == "python" else "sh"
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": f"submission/{submission.id}/main.{suffix}",
                         "digest": {"sha256": submission.code_sha256}}],
            "predicateType": PREDICATE_TYPE}


def _workspace(submission: Submission) -> dict[str, Any]:
    return {"name": submission.request.workspace,
            "version_before": submission.base_version,
            "version_after": submission.new_version,
            "tree_before": submission.base_tree_digest,
            "tree_after": submission.new_tree_digest}


def with_key_rotation(document: dict[str, Any],
                      rotation: dict[str, Any] | None) -> dict[str, Any]:
    """The statement with the rotation record (a DSSE envelope signed by the outgoing key) in
    its predicate, when this receipt is the first its key signs: signed inside the receipt,
    the handover cannot be moved to another sequence or stripped without breaking it."""
    if rotation is not None:
        document["predicate"]["key_rotation"] = rotation
    return document


def canonical(document: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes: the exact payload that is signed. Integers the sandbox can push
    past JCS's domain (a sparse file's size) are carried as decimal strings."""
    return bytes(rfc8785.dumps(untrusted.json_safe(document)))


def observation_summary(observation: Observation | None,
                        diff: DiffSummary | None) -> dict[str, Any] | None:
    """An observation with its limits hit and diff counts, as receipts and the API show it."""
    if observation is None:
        return None
    summary = observation.model_dump(mode="json")
    summary["limits_hit"] = [limit.value for limit in observation.limits_hit]
    summary["diff"] = diff.model_dump(mode="json") if diff is not None else None
    return summary
