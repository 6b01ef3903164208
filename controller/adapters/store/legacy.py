"""Records written by releases before records were bounded, brought to today's form.

Used once, by the store's migration: an old record held its request, each diff in full and
the outputs as text; today the request has its own column, a diff its own rows (the record
keeps ``DiffSummary``) and an output its own row (the record keeps a preview).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controller.core import records
from controller.core.models import LABEL_KEY, Diff, Phase, Submission


@dataclass(frozen=True)
class Split:
    record: str  # the Submission without its request
    request: str
    summary: str
    changes: list[tuple[str, int, str]]  # (phase, index, change JSON)
    outputs: list[tuple[str, str, bytes]]  # (phase, stream, bytes)


def split(raw: str) -> Split:
    """``raw``, an old record, in today's parts; ``ValueError`` if it cannot be read."""
    old: dict[str, Any] = json.loads(raw)
    if not isinstance(old, dict):
        raise ValueError(f"a record is a JSON object, not {type(old).__name__}")
    changes: list[tuple[str, int, str]] = []
    for phase, field in ((Phase.DRY_RUN, "dry_run_diff"), (Phase.BOUNDED, "bounded_run_diff")):
        if isinstance(found := old.get(field), dict) and "changes" in found:
            diff = Diff.model_validate(found)
            ordered = sorted(diff.changes, key=lambda change: change.path)
            changes += [(phase.value, index, json.dumps(records.change_json(change)))
                        for index, change in enumerate(ordered)]
            old[field] = diff.summary(records.changes_digest(diff.changes)).model_dump(
                mode="json")
    # The outputs the record kept were the last run's, decoded.
    phase = Phase.BOUNDED if old.get("bounded_run") else Phase.DRY_RUN
    outputs = [(phase.value, stream, str(old.get(stream, "")).encode(errors="replace"))
               for stream in ("stdout", "stderr") if old.get(stream)]
    for stream in ("stdout", "stderr"):
        old[stream] = records.preview(str(old.get(stream, "")).encode(errors="replace"))
    old["reason"] = records.capped(str(old.get("reason", "")))
    old["violations"] = list(records.capped_list(tuple(map(str, old.get("violations", ())))))
    request = old.get("request")
    if isinstance(request, dict) and isinstance(request.get("labels"), dict):
        # Label keys had no shape before: those that have none now stay in the receipt only.
        request["labels"] = {key: value for key, value in request["labels"].items()
                             if LABEL_KEY.match(key)}
    submission = Submission.model_validate(old)
    return Split(record=submission.model_dump_json(exclude={"request"}),
                 request=submission.request.model_dump_json(),
                 summary=records.summarize(submission).model_dump_json(),
                 changes=changes, outputs=outputs)
