"""What a receipt says: the in-toto Statement for one terminal submission.

Pure: builds the statement and its canonical bytes (RFC 8785). Signing and storing happen in
``signing`` and ``store``.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from controller import __version__
from controller.models import Diff, Observation, Submission, utcnow
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
    suffix = "py" if request.language.value == "python" else "sh"
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"submission/{submission.id}/main.{suffix}",
                     "digest": {"sha256": submission.code_sha256}}],
        "predicateType": PREDICATE_TYPE,
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
                "files": [f.path for f in request.files],
            },
            "decisions": [d.model_dump(mode="json") for d in submission.decisions],
            "profile": {"name": profile_name, "digest": submission.profile_digest},
            "image_id": submission.image_id,
            "dry_run": observation_summary(submission.dry_run, submission.dry_run_diff),
            "bounded_run": observation_summary(submission.bounded_run,
                                               submission.bounded_run_diff),
            "violations": list(submission.violations),
            "approval": submission.approval.model_dump(mode="json")
            if submission.approval else None,
            "workspace": {
                "name": request.workspace,
                "version_before": submission.base_version,
                "version_after": submission.new_version,
                "tree_before": submission.base_tree_digest,
                "tree_after": submission.new_tree_digest,
            },
            "evidence": submission.evidence_dir is not None,
            "timestamps": {"created": submission.created_at.isoformat(),
                           "finished": utcnow().isoformat()},
            "controller_version": __version__,
            "sequence": sequence,
            "previous_receipt_digest": previous_digest,
        },
    }


def canonical(document: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes: the exact payload that is signed."""
    return bytes(rfc8785.dumps(document))


def observation_summary(observation: Observation | None,
                        diff: Diff | None) -> dict[str, Any] | None:
    """An observation with its limits hit and diff counts, as receipts and the API show it."""
    if observation is None:
        return None
    summary = observation.model_dump(mode="json")
    summary["limits_hit"] = [limit.value for limit in observation.limits_hit]
    summary["diff"] = diff.summary() if diff is not None else None
    return summary
