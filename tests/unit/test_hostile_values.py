"""Values the sandbox chose reach the controller's records, receipts and screens as data:
every one ends in a decision naming its cause, never in a record that cannot be sealed."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.fs.tmpfs import ScratchMounts
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import Behaviour, FakeRuntime, Outcome
from controller.adapters.store.submissions import Store
from controller.cli.run import _print_result
from controller.core import untrusted
from controller.core.models import AuditSource, Phase, State, Submission
from controller.core.ports import SUBMISSION_UIDS, RunSpec
from controller.service.controller import Controller
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python


def controller_with(tmp_path: Path, behaviour: Behaviour,
                    **fake: Any) -> Controller[Store, ShadowedEngine]:
    # Real scratch mounts: a tmpfs holds what a data disk cannot (sparse files past 2**53).
    return make_controller(tmp_path, FakeRuntime(behaviour=behaviour, **fake),
                           tmpfs=ScratchMounts())


def verified(controller: Controller[Store, ShadowedEngine], tmp_path: Path) -> list[dict[str, Any]]:
    """Every receipt's predicate (JSON) in the log, after the whole log verified."""
    from controller.adapters.signing import KeyRing

    pem = "".join(k.pem for k in KeyRing(tmp_path / "keys").public_keys()).encode()
    lines = [envelope for _, envelope in controller.store.receipts()]
    report = verify_log(lines, load_public_keys(pem))
    assert report.ok, report.problems
    return [json.loads(base64.b64decode(json.loads(line)["payload"]))["predicate"]
            for line in lines]


def sparse(size: int, phases: tuple[Phase, ...]) -> Behaviour:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase in phases:
            with (spec.workspace_dir / "huge").open("wb") as handle:
                handle.truncate(size)
        return Outcome()
    return behaviour


@pytest.mark.parametrize("phases", [(Phase.DRY_RUN, Phase.BOUNDED), (Phase.BOUNDED,)])
def test_a_size_past_json_integers_is_sealed_and_the_service_restarts(
        tmp_path: Path, phases: tuple[Phase, ...]) -> None:
    controller = controller_with(tmp_path, sparse(1 << 60, phases))
    result = controller.submit(python("import os; os.truncate('huge', 1 << 60)"))
    assert result.state in (State.DENIED, State.ROLLED_BACK), result.reason
    assert "infrastructure failure" not in result.reason
    [predicate] = verified(controller, tmp_path)
    run = predicate["bounded_run" if phases == (Phase.BOUNDED,) else "dry_run"]
    assert isinstance(run, dict)
    assert run["diff"]["size_after"] == str(1 << 60)  # a decimal string, exactly
    # A restart: another controller on the same data reconciles and starts.
    restarted = controller_with(tmp_path, sparse(1 << 60, phases))
    assert restarted.reconcile() == []
    assert restarted.store.unfinished() == []


def test_a_name_that_is_not_utf8_commits_with_its_bytes_preserved(tmp_path: Path) -> None:
    raw = b"caf\xe9 \x1b[32mok\n%"

    def behaviour(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / os.fsdecode(raw)).write_text("x")
        os.symlink(os.fsdecode(b"target-\xff"), spec.workspace_dir / "link")
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("open(b'caf\\xe9', 'w')"))
    assert result.state is State.COMMITTED, result.reason
    version = controller.workspaces.version_dir("@local/default", 1)
    assert raw in os.listdir(os.fsencode(version))
    assert result.bounded_run_diff is not None
    recorded = {str(change["path"]): change
                for _, change in controller.store.changes(result.id, Phase.BOUNDED)}
    assert set(recorded) == {"caf%E9 %1B[32mok%0A%25", "link"}
    assert untrusted.name_bytes("caf%E9 %1B[32mok%0A%25") == raw
    assert recorded["link"]["link_target"] == "target-%FF"
    verified(controller, tmp_path)


def test_exit_statuses_the_code_chooses_are_only_exit_statuses(tmp_path: Path) -> None:
    # 137 looks like SIGKILL and 159 like SIGSYS; with an audit source in force neither is
    # taken as a kill, and a failing run is an ordinary rollback naming its status.
    controller = controller_with(tmp_path, lambda spec: Outcome(
        exit_code=137 if spec.phase is Phase.BOUNDED else 0))
    result = controller.submit(python("raise SystemExit(137)"))
    assert result.state is State.ROLLED_BACK
    assert result.reason == "bounded run failed (exit code 137)"


def test_a_hazard_left_by_a_run_that_lost_its_engine_is_quarantined(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            os.symlink("/etc/shadow", spec.workspace_dir / "escape")
            return Outcome(fail=True)  # e.g. "killed from outside" as the engine recorded
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("x"))
    assert result.state is State.QUARANTINED, result.reason
    assert "symlink leaving the workspace: escape" in result.reason
    assert "fake engine failure" in result.reason
    assert result.evidence_dir and (Path(result.evidence_dir) / "workspace").is_dir()


@pytest.mark.parametrize(("phase", "state"), [(Phase.DRY_RUN, State.DENIED),
                                              (Phase.BOUNDED, State.QUARANTINED)])
def test_an_incomplete_observation_never_commits(tmp_path: Path, phase: Phase,
                                                 state: State) -> None:
    lost = "kernel audit records were lost"
    controller = controller_with(tmp_path, lambda spec: Outcome(
        incomplete=lost if spec.phase is phase else None))
    result = controller.submit(python("x"))
    assert result.state is state, result.reason
    assert f"the observation is incomplete: {lost}" in result.reason


def test_without_a_kernel_audit_source_runs_are_refused(tmp_path: Path) -> None:
    runtime = FakeRuntime(source=AuditSource.NONE)
    controller = make_controller(tmp_path, runtime)
    result = controller.submit(python("print(1)"))
    assert result.state is State.DENIED and "no kernel audit source" in result.reason
    assert runtime.runs == []
    [predicate] = verified(controller, tmp_path)
    assert predicate["state"] == "denied"


def test_a_profile_may_accept_unaudited_runs_and_the_receipt_says_so(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    root = Path(__file__).parents[2] / "profiles"
    (profiles / "seccomp").symlink_to(root / "seccomp")
    text = (root / "standard.yaml").read_text()
    (profiles / "standard.yaml").write_text(text + "accept_unaudited: true\n")
    runtime = FakeRuntime(source=AuditSource.NONE)
    controller = make_controller(tmp_path / "data", runtime, profiles_dir=profiles)
    result = controller.submit(python("print(1)"))
    assert result.state is State.COMMITTED, result.reason
    [predicate] = verified(controller, tmp_path / "data")
    assert isinstance(predicate["bounded_run"], dict)
    assert predicate["bounded_run"]["audit_source"] == "none"


def test_each_submission_in_flight_runs_as_a_uid_of_its_own(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome())
    results = [controller.submit(python(f"print({n})")) for n in range(3)]
    runtime = controller.runtime
    assert isinstance(runtime, FakeRuntime)
    uids = [spec.uid for spec in runtime.runs]
    assert all(uid in SUBMISSION_UIDS for uid in uids)
    assert uids[0::2] == uids[1::2]  # both runs of one submission: the same uid
    assert [r.sandbox_uid for r in results] == uids[0::2]


def test_no_two_submissions_in_flight_share_a_uid_across_processes(tmp_path: Path) -> None:
    from controller.adapters.store.submissions import Store
    from controller.errors import RuntimeUnavailableError

    controller = controller_with(tmp_path, lambda spec: Outcome())
    a, b, c = (controller.accept(python(x)) for x in "abc")
    other = Store(tmp_path / "sandgate.db")  # another process on the same database
    pair = range(10002, 10004)
    first = controller.store.claim_uid(a.id, pair)
    second = other.claim_uid(b.id, pair)
    assert {first, second} == set(pair)
    assert controller.store.claim_uid(a.id, pair, wanted=first) == first  # its own: kept
    with pytest.raises(RuntimeUnavailableError, match="no sandbox uid is free"):
        other.claim_uid(c.id, pair, wanted=first)
    held = controller.store.get(a.id)
    assert held is not None
    controller.sealer.finish(held, State.DENIED, reason="done")
    assert other.claim_uid(c.id, pair, wanted=first) == first  # a finished one holds none
    other.close()


def test_the_receipt_binds_each_submitted_file_by_digest_and_mode(tmp_path: Path) -> None:
    from controller.core.models import SubmissionRequest, SubmittedFile

    controller = controller_with(tmp_path, lambda spec: Outcome())
    request = SubmissionRequest(language=python("x").language, code="x", files=(
        SubmittedFile(path="run.sh", content="echo hi", mode=0o755),
        SubmittedFile(path="data.bin", content=base64.b64encode(b"\0\1").decode(),
                      encoding="base64")))
    controller.submit(request)
    [predicate] = verified(controller, tmp_path)
    import hashlib

    assert predicate["request"]["files"] == [
        {"path": "run.sh", "mode": "0755", "sha256": hashlib.sha256(b"echo hi").hexdigest()},
        {"path": "data.bin", "mode": "0644", "sha256": hashlib.sha256(b"\0\1").hexdigest()}]


def test_a_statement_that_cannot_be_built_gets_a_minimal_signed_receipt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.core import receipts

    def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise ValueError("an unforeseen value")

    monkeypatch.setattr(receipts, "statement", broken)
    controller = controller_with(tmp_path, lambda spec: Outcome())
    result = controller.submit(python("print(1)"))
    assert result.state is State.COMMITTED
    [predicate] = verified(controller, tmp_path)
    assert predicate["minimal"] is True and predicate["state"] == "committed"
    assert "ValueError: an unforeseen value" in str(predicate["reason"])
    assert predicate["workspace"]["tree_after"] == result.new_tree_digest


def test_one_unreadable_record_stops_neither_reconcile_nor_the_others(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome())
    bad, good = controller.accept(python("a")), controller.accept(python("b"))
    db = controller.store._db  # a record written by no release we know
    db.execute("UPDATE submissions SET record = ? WHERE id = ?", ('{"id": 1}', bad.id))
    ended = controller.reconcile()
    assert [s.id for s in ended] == [good.id] and ended[0].state is State.DENIED


def test_reconcile_goes_on_past_a_record_that_fails_to_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome())
    first, second = controller.accept(python("a")), controller.accept(python("b"))
    from controller.service.pipeline import Job

    original = Job.fail

    def fail(job: Job, reason: str) -> Submission:
        if job.sub.id == first.id:
            raise OSError("disk trouble for this one")
        return original(job, reason)

    monkeypatch.setattr(Job, "fail", fail)
    ended = controller.reconcile()
    assert [s.id for s in ended] == [second.id]


def test_reasons_quoting_undecodable_names_are_stored_and_sealed(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            raise OSError(2, "No such file", os.fsdecode(b"/w/\xff\xfe"))
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("x"))
    assert result.state is State.ROLLED_BACK
    stored = controller.store.get(result.id)
    assert stored is not None and "\\udcff\\udcfe" in stored.reason
    verified(controller, tmp_path)


def test_the_cli_shows_what_the_sandbox_chose_escaped(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    forged = "\n0123  committed  (receipt #1)\r\x1b[2K\x1b]0;title\x07"
    submission = Submission(id="s1", trace_id="t", request=python("x"), code_sha256="0",
                            state=State.QUARANTINED, reason=f"validation: {forged}",
                            stdout=f"hi{forged}\n", stderr="\x9b31m")
    _print_result(submission)
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\r" not in shown and "\x07" not in shown
    assert "\x9b" not in shown
    lines = shown.splitlines()
    assert lines[0] == "s1  quarantined  (receipt #None)"
    assert not any(line.startswith("0123") for line in lines)  # no forged line of its own
    assert "\\x1b[2K" in shown


def test_the_quarantine_evidence_is_bound_into_the_receipt_by_its_manifest(
        tmp_path: Path) -> None:
    import hashlib

    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            os.symlink("/etc/shadow", spec.workspace_dir / "escape")
            (spec.workspace_dir / os.fsdecode(b"note-\xff")).write_text("kept")
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("x"))
    assert result.state is State.QUARANTINED and result.evidence_dir
    evidence = Path(result.evidence_dir)
    manifest = (evidence / "manifest.json").read_bytes()
    [predicate] = verified(controller, tmp_path)
    bound = predicate["evidence"]
    assert isinstance(bound, dict)
    assert bound["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    listed = {entry["path"]: entry for entry in json.loads(manifest)}
    assert listed["workspace/note-%FF"]["sha256"] == hashlib.sha256(b"kept").hexdigest()
    assert listed["code"]["sha256"] == hashlib.sha256(b"x").hexdigest()
    assert bound["files"] == len(listed) and bound["entries"] == sorted(
        listed.values(), key=lambda entry: entry["path"])


def test_a_tripwire_seen_before_a_strangers_kill_still_quarantines(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome(
        seccomp_killed=spec.phase is Phase.BOUNDED, killed_outside=spec.phase is Phase.BOUNDED))
    result = controller.submit(python("x"))
    assert result.state is State.QUARANTINED, result.reason
    assert result.reason.startswith("tripwire:") and "killed from outside" in result.reason
    assert result.bounded_run is not None and result.bounded_run.seccomp_killed


def test_a_quarantine_near_the_path_limit_keeps_its_cause_and_its_manifest(
        tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            fd = os.open(spec.workspace_dir, os.O_RDONLY)
            try:  # 2,990 bytes of path: within the workspace's limit, past it one level down
                for _ in range(12):
                    os.mkdir("d" * 240, dir_fd=fd)
                    fd = os.open("d" * 240, os.O_RDONLY, dir_fd=fd) or fd
                os.mkdir("e" * 100, dir_fd=fd)
            finally:
                os.close(fd)
            os.symlink("/etc/shadow", spec.workspace_dir / "escape")
        return Outcome()

    controller = controller_with(tmp_path, behaviour)
    result = controller.submit(python("x"))
    assert result.state is State.QUARANTINED, result.reason
    assert "symlink leaving the workspace: escape" in result.reason
    assert "infrastructure failure" not in result.reason
    assert result.evidence is not None and result.evidence.files >= 1


def test_readyz_says_when_child_tripwires_cannot_be_seen(tmp_path: Path) -> None:
    from controller.adapters.signing import KeyRing
    from controller.adapters.store.principals import Principals
    from controller.api.deps import ApiContext
    from controller.api.limits import RateLimiter
    from controller.api.operations import _audited
    from controller.errors import SandgateError
    from controller.service.dispatcher import Dispatcher
    from controller.settings import Settings

    controller = make_controller(tmp_path, FakeRuntime(source=AuditSource.NONE))
    settings = Settings(data_dir=tmp_path)
    ctx = ApiContext(controller=controller, dispatcher=Dispatcher(controller, workers=1),
                     principals=Principals(settings.db_path), keyring=KeyRing(settings.keys_dir),
                     settings=settings, limiter=RateLimiter(1, 1))
    with pytest.raises(SandgateError, match="no kernel audit source is readable"):
        _audited(ctx)
    accepting = controller.profiles["standard"].model_copy(update={"accept_unaudited": True})
    controller.profiles = {**controller.profiles, "standard": accepting}
    _audited(ctx)  # a profile accepts it: ready
    controller.runtime = FakeRuntime(source=AuditSource.NETLINK)
    controller.profiles = {**controller.profiles, "standard": accepting.model_copy(
        update={"accept_unaudited": False})}
    _audited(ctx)
