"""A submission's record stays small whatever the sandbox or the caller sends: the whole diff
and outputs are kept apart, fetched a page at a time; names belong to their principal."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.errors import RuntimeUnavailableError
from controller.models import OUTPUT_PREVIEW_BYTES, FileChange, Phase, State
from controller.ports import RunSpec
from controller.records import changes_digest
from controller.runtime.fake import FakeRuntime, Outcome
from controller.service import Controller
from tests.conftest import make_controller, python

FILES = 3000


def controller_with(tmp_path: Path, behaviour: object) -> Controller:
    return make_controller(tmp_path, FakeRuntime(behaviour=behaviour))  # type: ignore[arg-type]


def row_sizes(tmp_path: Path, sid: str) -> tuple[int, int]:
    db = sqlite3.connect(tmp_path / "sandgate.db")
    try:
        record, summary = db.execute("SELECT length(record), length(summary) FROM submissions "
                                     "WHERE id = ?", (sid,)).fetchone()
    finally:
        db.close()
    return int(record), int(summary)


def predicate(controller: Controller, sid: str) -> dict[str, object]:
    envelope = controller.store.receipt_for(sid)
    assert envelope is not None
    found: dict[str, object] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return found["predicate"]  # type: ignore[return-value]


def many_files(spec: RunSpec) -> Outcome:
    """Thousands of long names, hundreds of them setuid: what a 600-byte program makes."""
    for index in range(FILES):
        path = spec.workspace_dir / f"{index:05}{'n' * 195}"
        path.write_text("x")
        if spec.phase is Phase.BOUNDED and index < 300:
            path.chmod(0o4755)
    return Outcome(stdout=b"\xff" * (1 << 20))


def test_thousands_of_changes_and_hazards_make_a_small_record(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, many_files)
    result = controller.submit(python("planted"))
    assert result.state is State.QUARANTINED
    record, summary = row_sizes(tmp_path, result.id)
    # The whole diff alone is over 600 KB per run; the record keeps counts and previews.
    assert record < 200_000 and summary < 1_000
    diff = result.bounded_run_diff
    assert diff is not None and (diff.created, diff.setuid_files) == (FILES, 300)
    assert len(diff.hazard_sample) == 20
    assert len(result.violations) == 50 and result.violations[-1] == "… and 251 more"
    assert len(result.reason) < 2100 and result.reason.endswith("more characters)")
    # The whole list is a page at a time away, and its digest is the summary's.
    pages, cursor = [], -1
    while page := controller.store.changes(result.id, Phase.BOUNDED, after=cursor, limit=700):
        pages += [change for _, change in page]
        cursor = page[-1][0]
    assert len(pages) == FILES
    assert changes_digest(FileChange.model_validate(c) for c in pages) == diff.changes_sha256
    # The receipt binds the whole diff by that digest, and carries no list of paths.
    signed = json.dumps(predicate(controller, result.id))
    assert diff.changes_sha256 in signed and len(signed) < 60_000


def test_outputs_are_previews_in_the_record_and_whole_apart(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome(stdout=b"\xff" * (1 << 20)))
    result = controller.submit(python("noisy"))
    assert result.state is State.COMMITTED, result.reason
    assert result.stdout == "\ufffd" * OUTPUT_PREVIEW_BYTES
    assert row_sizes(tmp_path, result.id)[0] < 4 * OUTPUT_PREVIEW_BYTES
    assert controller.store.output(result.id, Phase.BOUNDED, "stdout") == (
        b"\xff" * (1 << 20), 1 << 20)
    assert controller.store.output(result.id, Phase.DRY_RUN, "stdout", 10, 5) == (
        b"\xff" * 5, 1 << 20)


def test_two_agents_each_have_their_own_default(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        code = (spec.code_dir / "main.py").read_text()
        (spec.workspace_dir / "who.txt").write_text(code)
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    for agent in ("alice", "bob", "alice"):
        done = controller.submit(python(agent, agent=agent))
        assert done.state is State.COMMITTED, done.reason
    assert controller.store.workspace("alice", "default") == (2, "@alice/default")
    assert controller.store.workspace("bob", "default") == (1, "@bob/default")
    for agent, version in (("alice", 2), ("bob", 1)):
        tree = controller.workspaces.version_dir(f"@{agent}/default", version)
        assert (tree / "who.txt").read_text() == agent


def test_no_host_path_reaches_a_record_or_a_receipt(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        raise RuntimeUnavailableError(f"cannot read {spec.workspace_dir / 'x'}: gone")

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("x"))
    assert result.state is State.DENIED
    assert "<data>" in result.reason and str(tmp_path) not in result.reason
    assert str(tmp_path) not in json.dumps(predicate(controller, result.id))


@pytest.mark.parametrize("labels", [{"k" * 64: "v"}, {"": "v"}, {"a b": "v"},
                                    {"ok": "v" * 257}, {f"k{i}": "v" for i in range(33)}])
def test_labels_have_shapes_and_caps(labels: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        python("print(1)", labels=labels)


def test_listing_lines_are_small_whatever_the_reason(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, many_files)
    result = controller.submit(python("planted"))
    [line] = controller.store.summaries(agent="local")
    assert line.id == result.id and line.state == "quarantined" and line.changed == FILES
    assert len(line.reason) < 400
    assert os.path.getsize(tmp_path / "sandgate.db") > 0
