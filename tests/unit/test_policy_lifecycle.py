"""Policy as code end to end on a fake runtime: admission, approval, quarantine effects,
shadow bundles, hot reload and the bundle archive."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.policy.bundle import Bundle, bundle_digest
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime, Outcome
from controller.adapters.store.submissions import Store
from controller.core.models import Phase, State
from controller.core.ports import RunSpec
from controller.errors import ForbiddenError, PolicyBundleError
from controller.service.controller import Controller
from tests.conftest import ROOT, bundle_with, make_controller, python

DEFAULT = ROOT / "policies" / "default"


APPROVAL_RULE = """
@id("run_unattended.mass-delete-needs-a-human")
@reason("the dry run deleted more than 2 files")
forbid (principal, action == Action::"run_unattended", resource)
when { context.dry_run_diff.deleted > 2 };
"""


def deleting(spec: RunSpec) -> Outcome:
    for path in spec.workspace_dir.glob("f*"):
        path.unlink()
    return Outcome()


def seeded(tmp_path: Path, policy_dir: Path, **kwargs: Any
           ) -> tuple[Controller[Store, ShadowedEngine], FakeRuntime]:
    """A controller whose workspace holds five files (committed by a first submission)."""
    def create(spec: RunSpec) -> Outcome:
        for n in range(5):
            (spec.workspace_dir / f"f{n}").write_text(str(n))
        return Outcome()

    runtime = FakeRuntime(behaviour=create)
    controller = make_controller(tmp_path / "data", runtime, policy_dir=policy_dir,
                                 **kwargs)
    assert controller.submit(python("create")).state is State.COMMITTED
    runtime.behaviour = deleting
    runtime.runs.clear()
    return controller, runtime


def predicate(controller: Controller[Store, ShadowedEngine],
              submission_id: str) -> dict[str, Any]:  # a receipt's, from its JSON
    envelope = json.loads(controller.store.receipt_for(submission_id) or "{}")
    return dict(json.loads(base64.b64decode(envelope["payload"]))["predicate"])


def test_approval_parks_then_approve_runs_and_commits(tmp_path: Path) -> None:
    controller, runtime = seeded(tmp_path, bundle_with(tmp_path, "b", APPROVAL_RULE))
    parked = controller.submit(python("delete"))
    assert parked.state is State.AWAITING_APPROVAL
    assert parked.decisions[-1].outcome.value == "REQUIRE_APPROVAL"
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN]
    with pytest.raises(ForbiddenError):
        controller.approve(parked.id, "local", True, "it is mine")  # the agent itself
    approved = controller.approve(parked.id, "carol", True, "expected cleanup")
    assert approved.state is State.RUNNING
    done = controller.process(approved)
    assert done.state is State.COMMITTED and done.new_version == 2
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN, Phase.BOUNDED]
    approval = predicate(controller, done.id)["approval"]
    assert approval["approver"] == "carol" and approval["approve"] is True


def test_rejection_and_expiry_deny(tmp_path: Path) -> None:
    controller, runtime = seeded(tmp_path, bundle_with(tmp_path, "b", APPROVAL_RULE))
    rejected = controller.approve(controller.submit(python("a")).id, "carol", False, "no")
    assert rejected.state is State.DENIED and "rejected by carol" in rejected.reason
    assert predicate(controller, rejected.id)["approval"]["approve"] is False
    waiting = controller.submit(python("b"))
    assert controller.expire_approvals(ttl_s=3600) == []
    expired = controller.expire_approvals(ttl_s=0)
    assert [s.id for s in expired] == [waiting.id]
    ended = controller.store.get(waiting.id)
    assert ended is not None and ended.state is State.DENIED
    assert all(spec.phase is Phase.DRY_RUN for spec in runtime.runs)
    assert controller.store.workspace_version("default") == 1


def test_a_quarantine_effect_quarantines_and_a_plain_forbid_rolls_back(tmp_path: Path) -> None:
    rule = """
@id("commit.quarantine-mass-delete")
@reason("deleting workspace files is never expected here")
@effect("quarantine")
forbid (principal, action == Action::"commit", resource)
when { context.diff.deleted > 2 };
"""
    controller, _ = seeded(tmp_path / "q", bundle_with(tmp_path, "q", rule))
    result = controller.submit(python("delete"))
    assert result.state is State.QUARANTINED and result.evidence_dir
    assert "commit.quarantine-mass-delete" in result.reason
    plain = rule.replace('@effect("quarantine")\n', "")
    controller, _ = seeded(tmp_path / "p", bundle_with(tmp_path, "p", plain))
    assert controller.submit(python("delete")).state is State.ROLLED_BACK


def test_admission_refusal_denies_before_any_run(tmp_path: Path) -> None:
    rule = """
@id("submit.no-sh")
@reason("this deployment runs python only")
forbid (principal, action == Action::"submit", resource)
when { context.request.language == "sh" };
"""
    runtime = FakeRuntime()
    controller = make_controller(tmp_path / "d", runtime,
                                 policy_dir=bundle_with(tmp_path, "a", rule))
    from controller.core.models import SubmissionRequest

    result = controller.submit(SubmissionRequest(language="sh", code="echo hi"))
    assert result.state is State.DENIED and "submit.no-sh" in result.reason
    assert runtime.runs == []


def test_shadow_disagreements_are_recorded_and_counted_not_enforced(tmp_path: Path) -> None:
    strict_shadow = bundle_with(tmp_path, "shadow", """
@id("run.shadow-deny-all-python")
@reason("trying out: no python at all")
forbid (principal, action == Action::"run", resource)
when { context.request.language == "python" };
""")
    controller = make_controller(tmp_path / "d", FakeRuntime(), shadow_dir=strict_shadow)
    result = controller.submit(python("print(1)"))
    assert result.state is State.COMMITTED  # enforcement follows the active bundle only
    run = next(d for d in result.decisions if d.gate.value == "run")
    assert run.shadow is not None and run.shadow.disagrees
    assert run.shadow.outcome.value == "DENY"
    assert run.shadow.bundle_digest == bundle_digest(strict_shadow)
    assert controller.engine.disagreements == 1
    assert controller.engine.shadow_decisions == len(result.decisions)


def test_reload_refuses_a_typo_and_takes_a_valid_bundle_on_the_next_decision(
        tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(DEFAULT, live)
    archive = tmp_path / "data" / "bundles"
    controller = make_controller(tmp_path / "data", FakeRuntime(), policy_dir=live)
    before = controller.submit(python("print(1)"))
    run_rules = live / "policies" / "run.cedar"
    original = run_rules.read_text()
    run_rules.write_text(original.replace("dry_run_diff.setuid_files", "dry_run_diff.setuidz"))
    with pytest.raises(PolicyBundleError) as caught:
        controller.engine.reload(archive)
    assert "run.cedar" in str(caught.value) and "run.deny-setuid" in str(caught.value)
    still = controller.submit(python("print(2)"))
    assert still.decisions[1].bundle_digest == before.decisions[1].bundle_digest
    run_rules.write_text(original.replace("showed nothing this bundle forbids",
                                          "showed nothing forbidden (v2)"))
    controller.engine.reload(archive)
    after = controller.submit(python("print(3)"))
    old, new = before.decisions[1].bundle_digest, after.decisions[1].bundle_digest
    assert old != new and new == bundle_digest(live)
    assert predicate(controller, after.id)["decisions"][1]["bundle_digest"] == new
    assert new is not None
    assert (archive / new.removeprefix("sha256:")).is_dir()
    assert bundle_digest(archive / new.removeprefix("sha256:")) == new


def test_policy_test_cli_passes_and_fails_on_a_changed_case(tmp_path: Path) -> None:
    tool = str(Path(sys.executable).parent / "sandgate")
    ok = subprocess.run([tool, "policy", "test", str(DEFAULT)], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0 and " 0 failed" in ok.stdout
    changed = tmp_path / "changed"
    shutil.copytree(DEFAULT, changed)
    cases = changed / "tests" / "cases.yaml"
    cases.write_text(cases.read_text().replace("rules: [run.deny-setuid]",
                                               "rules: [run.deny-something-else]"))
    bad = subprocess.run([tool, "policy", "test", str(changed)], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "run.deny-setuid" in bad.stdout


def test_the_watcher_reloads_bundles_and_profiles_and_skips_broken_ones(tmp_path: Path) -> None:
    import threading
    import time

    from controller.service.reloader import watch

    live, profiles = tmp_path / "live", tmp_path / "profiles"
    shutil.copytree(DEFAULT, live)
    shutil.copytree(ROOT / "profiles", profiles)
    controller = make_controller(tmp_path / "data", FakeRuntime(), policy_dir=live,
                                 profiles_dir=profiles)
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(controller, profiles, tmp_path / "archive",
                                                  0.05, stop), daemon=True)
    thread.start()

    def eventually(condition: object) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if callable(condition) and condition():
                return True
            time.sleep(0.05)
        return False

    def bundle() -> Bundle:
        loaded = controller.engine.bundle
        assert loaded is not None
        return loaded

    try:
        time.sleep(0.3)  # let the watcher take its first look before anything changes
        first = bundle().digest
        manifest = live / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace('"1.0.0"', '"1.0.1"'))
        assert eventually(lambda: bundle().version == "1.0.1")
        assert bundle().digest != first
        broken = live / "policies" / "run.cedar"
        broken.write_text(broken.read_text() + "\nthis is not cedar;\n")
        time.sleep(0.3)
        assert bundle().version == "1.0.1"
        strict = profiles / "strict.yaml"
        strict.write_text(strict.read_text().replace("pids: 32", "pids: 30"))
        assert eventually(lambda: controller.profiles["strict"].limits.pids == 30)
    finally:
        stop.set()
        thread.join(timeout=5)


def test_an_approval_after_the_profile_changed_denies_and_runs_nothing(tmp_path: Path) -> None:
    controller, runtime = seeded(tmp_path, bundle_with(tmp_path, "b", APPROVAL_RULE))
    parked = controller.submit(python("delete"))
    assert parked.state is State.AWAITING_APPROVAL and parked.sandbox_uid is not None
    standard = controller.profiles["standard"]
    looser = standard.model_copy(update={"digest": "sha256:" + "0" * 64})
    controller.profiles = {**controller.profiles, "standard": looser}
    answered = controller.approve(parked.id, "carol", True, "looks fine")
    assert answered.state is State.DENIED
    assert "profile 'standard' changed while the submission awaited approval" in answered.reason
    assert standard.digest in answered.reason and looser.digest in answered.reason
    assert [spec.phase for spec in runtime.runs] == [Phase.DRY_RUN]


def test_a_parked_submission_holds_no_uid_and_gets_its_own_back_when_free(
        tmp_path: Path) -> None:
    from controller.core.ports import SUBMISSION_UIDS

    controller, runtime = seeded(tmp_path, bundle_with(tmp_path, "b", APPROVAL_RULE))
    first, second = controller.submit(python("a")), controller.submit(python("b"))
    assert first.sandbox_uid is not None and second.sandbox_uid is not None
    # While both wait, their uids are free: another submission may run as one of them.
    squatter = controller.accept(python("c"))
    taken = controller.store.claim_uid(squatter.id, SUBMISSION_UIDS, wanted=first.sandbox_uid)
    assert taken == first.sandbox_uid
    restarted = make_controller(tmp_path / "data", runtime,
                                policy_dir=tmp_path / "b")
    assert [s.id for s in restarted.reconcile()] == [squatter.id]  # it was in flight
    done = restarted.process(restarted.approve(second.id, "carol", True, "fine"))
    assert done.state is State.COMMITTED and runtime.runs[-1].uid == second.sandbox_uid
    blocker = restarted.accept(python("d"))  # in flight with the uid first's dry run had
    restarted.store.claim_uid(blocker.id, SUBMISSION_UIDS, wanted=first.sandbox_uid)
    moved = restarted.process(restarted.approve(first.id, "carol", True, "fine"))
    assert runtime.runs[-1].phase is Phase.BOUNDED  # it ran (then lost a commit race)
    assert moved.sandbox_uid != first.sandbox_uid
    assert moved.sandbox_uid == runtime.runs[-1].uid


def test_every_loaded_profile_is_archived_under_its_digest(tmp_path: Path) -> None:
    from controller.profiles.load import archive_profile, load_profiles
    from controller.settings import SHIPPED_ROOT

    for profile in load_profiles(SHIPPED_ROOT / "profiles").values():
        path = archive_profile(profile, tmp_path / "archive")
        assert path.name == profile.digest.removeprefix("sha256:") + ".json"
        assert json.loads(path.read_text())["seccomp"] == profile.seccomp
