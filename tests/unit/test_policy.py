"""The default bundle and the gate: permit ordinary code, deny hazards, fail closed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.policy.bundle import bundle_digest, load_bundle
from controller.adapters.policy.cedar import CedarEngine
from controller.core.gate import assessment_context, to_outcome, validation_context
from controller.core.models import Diff, Gate, Observation, Outcome, Phase, StreamSummary
from controller.core.radius import Divergence
from controller.errors import PolicyBundleError
from controller.profiles.load import load_profile
from controller.settings import SHIPPED_ROOT
from tests.conftest import python

BUNDLE = SHIPPED_ROOT / "policies" / "default"
PROFILE = load_profile(SHIPPED_ROOT / "profiles" / "standard.yaml")
EMPTY = StreamSummary(size=0, sha256="0" * 64)


def run(**kwargs: Any) -> Observation:
    base: dict[str, Any] = {"phase": Phase.DRY_RUN, "exit_code": 0, "wall_time_ms": 5.0,
                            "stdout": EMPTY, "stderr": EMPTY, "image_id": "img"}
    return Observation.model_validate({**base, **kwargs})


def assess(engine: CedarEngine, observation: Observation, diff: Diff) -> Any:
    context = assessment_context(python("print(1)"), PROFILE, observation, diff.summary(""),
                                 max_deleted_files=20)
    return engine.decide(Gate.ASSESSMENT, "agent-a", "default", context)


@pytest.fixture(scope="module")
def engine() -> CedarEngine:
    return CedarEngine.from_path(BUNDLE)


def test_ordinary_code_is_permitted_and_pinned(engine: CedarEngine) -> None:
    decision = assess(engine, run(), Diff())
    assert decision.outcome is Outcome.PERMIT
    assert [r.id for r in decision.rules] == ["run.permit-ordinary"]
    assert decision.bundle_name == "default" and decision.bundle_version == "1.0.0"
    assert decision.bundle_digest == bundle_digest(BUNDLE)


@pytest.mark.parametrize(("observation", "diff", "rule"), [
    (run(), Diff(setuid_files=("x",)), "run.deny-setuid"),
    (run(), Diff(escaping_symlinks=("l",)), "run.deny-escaping-symlink"),
    (run(), Diff(device_nodes=("d",)), "run.deny-special-file"),
    (run(exit_code=159, seccomp_killed=True), Diff(), "run.deny-tripwire"),
    (run(exit_code=137, timed_out=True), Diff(), "run.deny-wall-time"),
    (run(exit_code=137, oom_killed=True), Diff(), "run.deny-memory"),
    (run(exit_code=1, pids_limit_hit=True), Diff(), "run.deny-pids"),
    (run(stdout=StreamSummary(size=2, sha256="x", truncated=True)), Diff(), "run.deny-output"),
])
def test_hazards_in_the_dry_run_deny(engine: CedarEngine, observation: Observation, diff: Diff,
                                     rule: str) -> None:
    decision = assess(engine, observation, diff)
    assert decision.outcome is Outcome.DENY
    assert [r.id for r in decision.rules] == [rule]
    assert decision.rules[0].reason


def _commit(engine: CedarEngine, diff: Diff, divergence: Divergence | None = None) -> Any:
    context = assessment_context(python("x"), PROFILE, run(), Diff().summary(""),
                                 max_deleted_files=20)
    return engine.decide(Gate.VALIDATION, "a", "w", validation_context(
        context, run(), diff.summary(""), divergence or Divergence()))


@pytest.mark.parametrize("divergence", [
    Divergence(created_outside=1), Divergence(deleted_outside=5), Divergence(mode_changed=1),
    Divergence(kind_changed=1), Divergence(totals_over=("size_after",)),
    Divergence(exit_changed=True), Divergence(network_new=True)])
def test_a_real_run_beyond_its_dry_run_is_not_committed(engine: CedarEngine,
                                                       divergence: Divergence) -> None:
    decision = _commit(engine, Diff(), divergence)
    assert decision.outcome is Outcome.DENY
    assert [rule.id for rule in decision.rules] == ["commit.deny-divergence"]


def test_a_bundle_whose_schema_lacks_divergence_fails_closed(tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(SHIPPED_ROOT / "policies" / "default", old)
    schema = old / "schema.cedarschema"
    schema.write_text(schema.read_text().replace("    divergence: Divergence,\n", ""))
    commit = old / "policies" / "commit.cedar"
    commit.write_text(commit.read_text().split('@id("commit.deny-divergence")')[0])
    assert _commit(CedarEngine.from_path(old), Diff()).outcome is Outcome.SILENCE


def test_commit_rolls_back_mass_delete_and_oversize(engine: CedarEngine) -> None:
    from controller.core.models import ChangeKind, EntryType, FileChange

    deletes = tuple(FileChange(path=f"f{i}", kind=ChangeKind.DELETED, type=EntryType.FILE)
                    for i in range(21))
    assert _commit(engine, Diff(changes=deletes[:20])).outcome is Outcome.PERMIT
    decision = _commit(engine, Diff(changes=deletes))
    assert (decision.outcome, decision.rules[0].id) == (Outcome.DENY,
                                                        "commit.rollback-mass-delete")
    big = _commit(engine, Diff(size_after=PROFILE.limits.workspace_bytes + 1))
    assert big.rules[0].id == "commit.rollback-size-cap"


def test_engine_errors_are_silence_not_permit(engine: CedarEngine) -> None:
    decision = engine.decide(Gate.ASSESSMENT, "a", "w", {"unexpected": 1})
    assert decision.outcome is Outcome.SILENCE and decision.errors
    assert to_outcome(True, ("a forbid failed to evaluate",)) is Outcome.SILENCE
    assert to_outcome(None, ()) is Outcome.SILENCE
    empty = CedarEngine(None).decide(Gate.ASSESSMENT, "a", "w", {})
    assert empty.outcome is Outcome.SILENCE and "no policy bundle" in empty.errors[0]


def test_bundle_with_a_typo_is_refused_naming_file_and_policy(tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(BUNDLE, broken)
    path = broken / "policies" / "run.cedar"
    path.write_text(path.read_text().replace("dry_run_diff.setuid_files",
                                             "dry_run_diff.setuid_filez"))
    with pytest.raises(PolicyBundleError) as caught:
        load_bundle(broken)
    assert "run.cedar" in str(caught.value) and "run.deny-setuid" in str(caught.value)
    engine = CedarEngine.from_path(BUNDLE)
    with pytest.raises(PolicyBundleError):
        engine.reload(broken)
    assert engine.bundle is not None and engine.bundle.digest == bundle_digest(BUNDLE)


def test_policies_need_an_id(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLE, bundle)
    (bundle / "policies" / "extra.cedar").write_text(
        'permit (principal, action == Action::"run", resource);\n')
    with pytest.raises(PolicyBundleError, match="no @id"):
        load_bundle(bundle)
