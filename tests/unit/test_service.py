"""The service on a fake runtime: every path ends in one terminal state with one receipt."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.adapters.fs.tmpfs import PlainDirectories, ScratchMounts, mounts_under
from controller.adapters.fs.trees import scan
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import Behaviour, FakeRuntime, Outcome
from controller.adapters.signing import PublicKeyInfo
from controller.adapters.store.submissions import Store
from controller.core.models import Phase, State, Submission
from controller.core.ports import RunSpec
from controller.core.trees import tree_digest
from controller.errors import RuntimeUnavailableError
from controller.service.controller import Controller
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python


def controller_with(tmp_path: Path, behaviour: Behaviour, *, mounts: bool = False
                    ) -> tuple[Controller[Store, ShadowedEngine], FakeRuntime]:
    """The service on the fake runtime; its scratch copies plain directories (no root
    needed), or real tmpfs mounts (``mounts``) for the tests of what those guarantee:
    ownership handed back to root, nothing left mounted."""
    runtime = FakeRuntime(behaviour=behaviour)
    return make_controller(tmp_path, runtime,
                           tmpfs=ScratchMounts() if mounts else PlainDirectories()), runtime


def writes(name: str, text: str = "x") -> Behaviour:
    def behaviour(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / name).write_text(text)
        return Outcome(stdout=b"hi\n")
    return behaviour


def test_clean_run_commits_the_staging_tree(tmp_path: Path) -> None:
    controller, runtime = controller_with(tmp_path, writes("out.txt", "data"))
    result = controller.submit(python("code"))
    assert result.state is State.COMMITTED and result.new_version == 1
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN, Phase.BOUNDED]
    # The real run's sandbox was started first, beside the dry run, and then ran.
    assert [spec.phase for spec in runtime.started] == [Phase.BOUNDED, Phase.DRY_RUN]
    assert runtime.discarded == []
    version = controller.workspaces.version_dir("@local/default", 1)
    assert (version / "out.txt").read_text() == "data"
    assert not (tmp_path / "runs" / result.id).exists()


@pytest.mark.parametrize(("behaviour", "state"), [
    (lambda spec: Outcome(seccomp_killed=spec.phase is Phase.DRY_RUN), State.DENIED),
    (lambda spec: Outcome(fail=spec.phase is Phase.DRY_RUN), State.DENIED)])
def test_a_submission_that_never_reaches_its_real_run_discards_the_sandbox_started_for_it(
        tmp_path: Path, behaviour: Behaviour, state: State) -> None:
    controller, runtime = controller_with(tmp_path, behaviour)
    result = controller.submit(python("code"))
    assert result.state is state, result.reason
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN]
    assert [spec.phase for spec in runtime.discarded] == [Phase.BOUNDED]
    assert not (tmp_path / "runs" / result.id).exists()


def test_seccomp_kill_in_the_real_run_quarantines(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        return Outcome(seccomp_killed=spec.phase is Phase.BOUNDED)

    controller, _ = controller_with(tmp_path, behaviour)
    result = controller.submit(python("bomb"))
    assert result.state is State.QUARANTINED and result.evidence_dir
    assert (Path(result.evidence_dir) / "submission.json").exists()
    assert controller.store.workspace_version("default") == 0


@pytest.mark.parametrize(("outcome", "state"), [
    (Outcome(fail=True), State.DENIED),
    (Outcome(seccomp_killed=True), State.DENIED),
    (Outcome(timed_out=True, exit_code=137), State.DENIED),
])
def test_dry_run_failures_deny_and_never_run_for_real(tmp_path: Path, outcome: Outcome,
                                                      state: State) -> None:
    controller, runtime = controller_with(tmp_path, lambda spec: outcome)
    result = controller.submit(python("x"))
    assert result.state is state
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN]


def test_engine_failure_in_the_real_run_rolls_back(tmp_path: Path) -> None:
    controller, _ = controller_with(
        tmp_path, lambda spec: Outcome(fail=spec.phase is Phase.BOUNDED))
    result = controller.submit(python("x"))
    assert result.state is State.ROLLED_BACK and "infrastructure failure" in result.reason


def test_a_bounded_run_that_fails_rolls_back(tmp_path: Path) -> None:
    controller, _ = controller_with(
        tmp_path, lambda spec: Outcome(exit_code=1 if spec.phase is Phase.BOUNDED else 0))
    result = controller.submit(python("x"))
    assert result.state is State.ROLLED_BACK and "exit code 1" in result.reason


def test_receipts_chain_across_submissions(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, writes("f"))
    for _ in range(3):
        controller.submit(python("x"))
    pem = "".join(k.pem for k in controller_keys(tmp_path)).encode()
    lines = [e for _, e in controller.store.receipts()]
    report = verify_log(lines, load_public_keys(pem))
    assert report.ok and report.checked == 3


def controller_keys(tmp_path: Path) -> list[PublicKeyInfo]:
    from controller.adapters.signing import KeyRing

    return KeyRing(tmp_path / "keys").public_keys()


def test_reconcile_ends_interrupted_submissions_safely(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, writes("f"))
    early = controller.accept(python("a"))
    late = controller.accept(python("b"))
    store = controller.store
    late = store.move(store.move(store.move(late, State.DRY_RUN), State.ASSESSING), State.RUNNING)
    ended = {s.id: s.state for s in controller.reconcile()}
    assert ended == {early.id: State.DENIED, late.id: State.ROLLED_BACK}
    assert store.unfinished() == [] and store.receipt_count() == 2


def test_a_concurrent_commit_makes_the_loser_roll_back_with_conflict(tmp_path: Path) -> None:
    inner: list[Submission] = []
    started: list[str] = []

    def behaviour(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / spec.submission_id).write_text("mine")
        if spec.phase is Phase.BOUNDED and not started:
            # While the first submission's real run is in flight, another one commits.
            started.append(spec.submission_id)
            inner.append(controller.submit(python("other")))
        return Outcome()

    controller, _ = controller_with(tmp_path, behaviour)
    loser = controller.submit(python("first"))
    winner = inner[0]
    assert winner.state is State.COMMITTED and winner.new_version == 1
    assert loser.state is State.ROLLED_BACK and loser.reason.startswith("conflict")
    version = controller.workspaces.version_dir("@local/default", 1)
    assert {p.name for p in version.iterdir()} == {winner.id}
    assert not controller.workspaces.version_dir("@local/default", 2).exists()


def test_each_run_has_a_fresh_copy_and_freshly_written_code(tmp_path: Path) -> None:
    seen: list[tuple[bool, float]] = []

    def behaviour(spec: RunSpec) -> Outcome:
        code = spec.code_dir / "main.py"
        seen.append(((spec.workspace_dir / "from-dry-run").exists(), code.stat().st_mtime))
        if spec.phase is Phase.DRY_RUN:
            (spec.workspace_dir / "from-dry-run").write_text("x")
            os.utime(code, (0, 0))  # as if the file had aged since the dry run
        return Outcome()

    controller, runtime = controller_with(tmp_path, behaviour)
    result = controller.submit(python("code"))
    assert result.state is State.COMMITTED
    dry, bounded = runtime.runs
    # Each its own mount (both tmpfs roots: mountinfo shows no host path, whichever run).
    assert dry.workspace_dir != bounded.workspace_dir and dry.code_dir != bounded.code_dir
    assert (dry.workspace_dir.name, dry.code_dir.name) == (bounded.workspace_dir.name,
                                                           bounded.code_dir.name)
    assert seen[1][0] is False  # the dry run's tree was gone before the bounded run
    assert seen[1][1] > 0  # rewritten before the bounded run, not left to age


def test_the_image_is_pinned_once_for_both_runs(tmp_path: Path) -> None:
    controller, runtime = controller_with(tmp_path, writes("f"))
    ids = iter(["sha256:first", "sha256:moved-tag"])
    runtime.images = lambda image: next(ids)
    result = controller.submit(python("x"))
    assert result.state is State.COMMITTED and result.image_id == "sha256:first"
    assert [spec.image for spec in runtime.runs] == ["sha256:first", "sha256:first"]
    assert runtime.resolved == ["sandgate/python:latest"]


def test_an_image_the_engine_cannot_resolve_denies_before_any_run(tmp_path: Path) -> None:
    controller, runtime = controller_with(tmp_path, writes("f"))

    def missing(image: str) -> str:
        raise RuntimeUnavailableError(f"image {image!r} is not available")

    runtime.images = missing
    result = controller.submit(python("x"))
    assert result.state is State.DENIED and "not available" in result.reason
    assert runtime.runs == []


def plants(hazard: str) -> Behaviour:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.DRY_RUN:
            return Outcome()
        if hazard == "setuid":
            tool = spec.workspace_dir / "tool"
            tool.write_text("x")
            tool.chmod(0o4755)
        else:
            os.symlink("/etc/shadow", spec.workspace_dir / "shadow")
        return Outcome(exit_code=1)  # then fail on purpose, hoping for a quiet rollback
    return behaviour


@pytest.mark.parametrize("hazard", ["setuid", "symlink"])
def test_a_failed_bounded_run_that_planted_a_hazard_is_quarantined(tmp_path: Path,
                                                                   hazard: str) -> None:
    controller, _ = controller_with(tmp_path, plants(hazard))
    result = controller.submit(python("x"))
    assert result.state is State.QUARANTINED, result.reason
    assert result.violations and "exit code 1" in result.reason
    assert result.evidence_dir is not None
    evidence = Path(result.evidence_dir)
    assert (evidence / "workspace").is_dir() and (evidence / "submission.json").exists()
    assert controller.store.workspace_version("default") == 0


def test_quarantine_evidence_is_private_and_carries_no_setuid_bit(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, plants("setuid"), mounts=True)
    result = controller.submit(python("x"))
    assert result.evidence_dir is not None
    evidence = Path(result.evidence_dir)
    assert stat.S_IMODE(evidence.stat().st_mode) == 0o700
    tool = (evidence / "workspace" / "tool").stat()
    assert not tool.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert (tool.st_uid, tool.st_gid) == (0, 0)


def test_published_versions_are_root_owned_without_privilege_bits(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        shared = spec.workspace_dir / "shared"
        shared.mkdir()
        shared.chmod(0o2775)  # a setgid directory is no hazard, but is not published as one
        (shared / "f").write_text("x")
        os.chown(shared / "f", 10001, 10001)
        return Outcome()

    controller, _ = controller_with(tmp_path, behaviour, mounts=True)
    result = controller.submit(python("x"))
    assert result.state is State.COMMITTED, result.reason
    version = controller.workspaces.version_dir("@local/default", 1)
    for path in (version, version / "shared", version / "shared" / "f"):
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0), path
        assert not info.st_mode & (stat.S_ISUID | stat.S_ISGID), path
    assert tree_digest(scan(version, hash_limit=1 << 20)) == result.new_tree_digest


def test_reconcile_finishes_an_interrupted_quarantine(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, writes("f"))
    store = controller.store
    sub = controller.accept(python("a"))
    sub = store.move(store.move(store.move(sub, State.DRY_RUN), State.ASSESSING), State.RUNNING)
    evidence = tmp_path / "quarantine" / sub.id  # kept just before the controller died
    evidence.mkdir(parents=True)
    (ended,) = controller.reconcile()
    assert ended.state is State.QUARANTINED and ended.evidence_dir == str(evidence)
    assert store.unfinished() == [] and store.receipt_count() == 1


def test_a_tree_changed_after_validation_is_never_committed(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, writes("out.txt", "validated"), mounts=True)

    def tamper(submission: Submission) -> None:  # a survivor writing after the scan
        if submission.state is State.VALIDATING:
            (tmp_path / "runs" / submission.id / "real" / "work" / "out.txt").write_text(
                "swapped")

    controller.listeners.append(tamper)
    result = controller.submit(python("code"))
    assert result.state is State.QUARANTINED, result.reason
    assert "the tree changed after validation" in result.reason
    assert result.evidence_dir is not None
    assert (Path(result.evidence_dir) / "workspace" / "out.txt").read_text() == "swapped"
    assert not controller.workspaces.version_dir("@local/default", 1).exists()
    assert mounts_under(tmp_path) == []


def nests(depth: int, phases: tuple[Phase, ...]) -> Behaviour:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase in phases:
            current = spec.workspace_dir
            for _ in range(depth):
                current = current / "d"
                current.mkdir()
        return Outcome()
    return behaviour


def test_a_dry_run_leaving_a_tree_too_deep_is_denied_by_name(tmp_path: Path) -> None:
    controller, runtime = controller_with(tmp_path, nests(1600, (Phase.DRY_RUN,)), mounts=True)
    result = controller.submit(python("code"))
    assert result.state is State.DENIED
    assert result.reason.startswith("dry run: the tree has a path longer than 3000 bytes")
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN]
    assert mounts_under(tmp_path) == [] and not (tmp_path / "runs" / result.id).exists()


def test_a_bounded_run_planting_a_tree_too_deep_is_quarantined(tmp_path: Path) -> None:
    controller, _ = controller_with(tmp_path, nests(1600, (Phase.BOUNDED,)), mounts=True)
    result = controller.submit(python("code"))
    assert result.state is State.QUARANTINED
    assert "longer than 3000 bytes" in result.reason and result.violations
    assert result.evidence_dir is not None
    evidence = Path(result.evidence_dir)
    assert "could not be copied whole" in (evidence / "workspace.error").read_text()
    assert mounts_under(tmp_path) == []


def test_quarantine_evidence_never_copies_a_sparse_terabyte(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            with (spec.workspace_dir / "big").open("wb") as handle:
                handle.truncate(1 << 40)  # costs the tmpfs nothing
            (spec.workspace_dir / "tool").write_text("x")
            os.chmod(spec.workspace_dir / "tool", 0o4755)  # a setuid file: quarantine
        return Outcome()

    controller, _ = controller_with(tmp_path, behaviour, mounts=True)
    result = controller.submit(python("code"))
    assert result.state is State.QUARANTINED, result.reason
    assert result.evidence_dir is not None
    evidence = Path(result.evidence_dir)
    assert not (evidence / "workspace" / "big").exists()
    assert "big" in (evidence / "workspace.error").read_text()
    kept = evidence / "workspace" / "tool"
    assert kept.read_text() == "x" and os.stat(kept).st_mode & 0o6000 == 0
    assert mounts_under(tmp_path) == []
