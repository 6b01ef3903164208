"""Quarantine evidence: what a flagged run left, kept for the security team alone and bound
into the receipt by the digest of its manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from controller.adapters.fs.trees import copy_tree, evidence_manifest
from controller.core.models import Evidence, Submission
from controller.core.ports import RunResult, Tmpfs
from controller.errors import WorkspaceError

log = logging.getLogger(__name__)


def keep_evidence(evidence: Path, submission: Submission, real: RunResult | None,
                  work: Path | None, tmpfs: Tmpfs, *, budget: int) -> Evidence:
    """Write the evidence of ``submission`` into ``evidence`` (the run's outputs, the record,
    the code and the run copy at ``work``, if it is still there) and its manifest."""
    evidence.parent.mkdir(parents=True, exist_ok=True)
    evidence.mkdir(mode=0o700, exist_ok=True)
    evidence.chmod(0o700)  # for the security team only; never the sandbox user's
    if real is not None:
        (evidence / "stdout.log").write_bytes(real.stdout)
        (evidence / "stderr.log").write_bytes(real.stderr)
        (evidence / "container_changes.json").write_text(json.dumps(real.container_changes))
    (evidence / "submission.json").write_text(submission.model_dump_json(indent=2))
    (evidence / "code").write_text(submission.request.code)
    if work is not None:
        _keep_workspace(submission.id, work, evidence / "workspace", tmpfs, budget)
    manifest, summary = evidence_manifest(evidence, hash_limit=budget)
    (evidence / "manifest.json").write_bytes(manifest)
    return summary


def _keep_workspace(submission_id: str, work: Path, destination: Path, tmpfs: Tmpfs,
                    budget: int) -> None:
    """The run copy as evidence (links as links; devices and fifos are listed in the
    submission's diff, not recreated). A tree that cannot be copied is said so in the
    evidence rather than failing the quarantine."""
    try:
        left_out = copy_tree(work, destination, budget=budget)
        tmpfs.hand_to_root(destination)
    except (OSError, WorkspaceError) as exc:
        log.warning("submission %s: workspace evidence incomplete: %s", submission_id, exc)
        (destination.parent / "workspace.error").write_text(
            f"the workspace could not be copied whole: {exc}\n")
        return
    if left_out:
        (destination.parent / "workspace.error").write_text(
            "files left out, past workspace_bytes in all (sizes in the submission's "
            "diff):\n" + "".join(f"{path}\n" for path in left_out))
