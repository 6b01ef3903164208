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

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import Behaviour, FakeRuntime, Outcome
from controller.adapters.store.submissions import Store
from controller.core.models import (
    MAX_CODE_CHARS,
    OUTPUT_PREVIEW_BYTES,
    FileChange,
    Phase,
    State,
    SubmittedFile,
)
from controller.core.ports import RunSpec
from controller.core.records import changes_digest
from controller.errors import RuntimeUnavailableError
from controller.service.controller import Controller
from tests.conftest import bundle_with, make_controller, parking_rule, python

FILES = 3000


def controller_with(tmp_path: Path, behaviour: Behaviour) -> Controller[Store, ShadowedEngine]:
    return make_controller(tmp_path, FakeRuntime(behaviour=behaviour))


def row_sizes(tmp_path: Path, sid: str) -> tuple[int, int]:
    db = sqlite3.connect(tmp_path / "sandgate.db")
    try:
        record, summary = db.execute("SELECT length(record), length(summary) FROM submissions "
                                     "WHERE id = ?", (sid,)).fetchone()
    finally:
        db.close()
    return int(record), int(summary)


def predicate(controller: Controller[Store, ShadowedEngine], sid: str) -> dict[str, object]:
    envelope = controller.store.receipt_for(sid)
    assert envelope is not None
    statement: dict[str, dict[str, object]] = json.loads(  # JSON: the receipt's statement
        base64.b64decode(json.loads(envelope)["payload"]))
    return statement["predicate"]


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


def test_views_and_the_approvals_queue_never_load_a_request_whole(tmp_path: Path) -> None:
    controller = make_controller(
        tmp_path, FakeRuntime(behaviour=writes_two_files),
        policy_dir=bundle_with(tmp_path, "parks", parking_rule(0)))
    code = "#" * MAX_CODE_CHARS
    files = tuple(SubmittedFile(path=f"f{i:04}", content="x" * 1000) for i in range(300))
    parked = controller.submit(python(code, files=files, agent="alice"))
    assert parked.state is State.AWAITING_APPROVAL, parked.reason
    seen = controller.store.glance(parked.id)
    assert seen is not None and seen.request.code == "" and seen.request.files == ()
    assert seen.state is State.AWAITING_APPROVAL and seen.dry_run_diff == parked.dry_run_diff
    shown = controller.store.preview(parked.id)
    assert shown is not None and shown.code == code[:64 << 10]
    assert (shown.code_chars, shown.files_count) == (MAX_CODE_CHARS, 300)
    assert shown.files == tuple(f"f{i:04}" for i in range(100))
    assert controller.store.code(parked.id) == code
    [queued] = controller.store.awaiting_approval()
    assert queued.id == parked.id and queued.request.code == ""


def writes_two_files(spec: RunSpec) -> Outcome:
    for name in ("a", "b"):
        (spec.workspace_dir / name).write_text(name)
    return Outcome()


def test_a_principal_parks_at_most_its_share(tmp_path: Path) -> None:
    controller = make_controller(
        tmp_path, FakeRuntime(behaviour=writes_two_files),
        policy_dir=bundle_with(tmp_path, "parks", parking_rule(0)), max_parked=2)
    states = [controller.submit(python(f"# {n}", agent="mallory")).state for n in range(3)]
    assert states == [State.AWAITING_APPROVAL] * 2 + [State.DENIED]
    refused = controller.store.get(controller.store.summaries(agent="mallory")[0].id)
    assert refused is not None and "max_parked_per_principal" in refused.reason
    # Another principal's requests still reach the approvers.
    assert controller.submit(python("# 4", agent="bob")).state is State.AWAITING_APPROVAL
    # Parked requests are left as they are by a restart's reconcile.
    assert controller.reconcile() == [] and len(controller.store.parked()) == 3


@pytest.mark.parametrize("agent", ["../x", "a/b", "", ".hidden", "x" * 65])
def test_an_agent_name_has_a_principals_shape(agent: str) -> None:
    with pytest.raises(ValidationError):
        python("print(1)", agent=agent)


def test_a_page_of_receipts_ends_at_its_byte_budget(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome())
    for n in range(5):
        controller.submit(python(f"print({n})"))
    whole = controller.store.receipts()
    size = len(whole[0][1])
    assert len(whole) == 5
    assert len(controller.store.receipts(max_bytes=size + 1)) == 2  # the second crosses it
    assert len(controller.store.receipts(max_bytes=1)) == 1


def test_a_record_no_release_can_read_is_listed_by_its_columns(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "sandgate.db")
    db.executescript(
        "CREATE TABLE submissions (id TEXT PRIMARY KEY, agent TEXT NOT NULL, workspace TEXT "
        "NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
        "record TEXT NOT NULL, sandbox_uid INTEGER);"
        "INSERT INTO submissions VALUES ('a', 'alice', 'w', 'denied', '2026-01-01T00:00:00', "
        "'2026-01-01T00:00:00', 'null', NULL);"
        "INSERT INTO submissions VALUES ('b', 'alice', 'w', 'denied', '2026-01-02T00:00:00', "
        "'2026-01-02T00:00:00', '{\"truncated', NULL);"
        "PRAGMA user_version = 2;")
    db.close()
    controller = controller_with(tmp_path, lambda spec: Outcome())
    lines = controller.store.summaries(agent="alice")
    assert [(line.id, line.reason) for line in lines] == [
        ("b", "the record cannot be read"), ("a", "the record cannot be read")]
