"""The blast radius and divergence, as pure functions: each kind of going beyond the dry run
is counted, and new content at the paths the dry run wrote is not."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from controller.core.binding import divergence, radius
from controller.core.models import (
    ChangeKind,
    DiffSummary,
    EntryType,
    FileChange,
    Observation,
    Phase,
    StreamSummary,
)
from controller.core.radius import Divergence
from controller.profiles.load import load_profile
from controller.settings import SHIPPED_ROOT

EMPTY = StreamSummary(size=0, sha256="0" * 64)


def observed(phase: Phase = Phase.DRY_RUN, *, exit_code: int = 0, memory: int = 50 << 20,
             stdout: int = 0) -> Observation:
    return Observation(phase=phase, exit_code=exit_code, wall_time_ms=1, stdout=StreamSummary(
        size=stdout, sha256="0" * 64), stderr=EMPTY, image_id="x",
        peak_memory_bytes=memory, peak_pids=3, cpu_time_ns=10_000_000)


def summary(size_after: int = 100, **counts: int) -> DiffSummary:
    return DiffSummary(changes_sha256="c" * 64, size_after=size_after, **counts)


def change(path: str, kind: ChangeKind = ChangeKind.CREATED, type_: EntryType = EntryType.FILE,
           mode: int = 0o644, content: str = "a") -> FileChange:
    return FileChange(path=path, kind=kind, type=type_, mode=mode, size=len(content),
                      sha256=hashlib.sha256(content.encode()).hexdigest())


DRY = (change("old.txt", ChangeKind.MODIFIED), change("out/report.txt"), change("stamp.txt"))


def against(real: tuple[FileChange, ...], *, real_obs: Observation | None = None,
            real_diff: DiffSummary | None = None) -> Divergence:
    bound = radius(observed(), summary(created=2, modified=1))
    return divergence(bound, DRY, sorted(real, key=lambda c: c.path),
                      real_obs or observed(Phase.BOUNDED), real_diff or summary(),
                      tolerance=0.5)


def test_the_same_paths_with_new_content_do_not_diverge() -> None:
    real = (change("out/report.txt", content="other"), change("stamp.txt", content="12:01"),
            change("old.txt", ChangeKind.MODIFIED, content="x" * 500))
    found = against(real)
    assert not found.diverged and found.sample == ()
    # Not divergence, but said, for a bundle that weighs it: which paths got other bytes.
    assert found.content_changed == 3 and found.content_roots == ("old.txt", "out", "stamp.txt")
    assert found.dry_only == 0


def test_the_same_bytes_are_no_content_change_and_what_the_real_run_skipped_is_counted(
        ) -> None:
    found = against((change("out/report.txt"),))
    assert not found.diverged
    assert (found.content_changed, found.dry_only) == (0, 2)  # old.txt and stamp.txt


def test_a_file_too_large_to_hash_counts_as_changed_content() -> None:
    unhashed = change("stamp.txt").model_copy(update={"sha256": None})
    assert against((unhashed,)).content_changed == 1


def test_doing_less_than_the_dry_run_does_not_diverge() -> None:
    assert not against((change("stamp.txt"),)).diverged


def test_each_kind_of_going_beyond_is_counted() -> None:
    real = (change(".hooks/post-checkout"),  # a path the dry run never wrote
            change("keep.txt", ChangeKind.MODIFIED),
            change("gone.txt", ChangeKind.DELETED),
            change("old.txt", ChangeKind.DELETED),  # the dry run modified it; this deletes
            change("out/report.txt", type_=EntryType.SYMLINK),
            change("stamp.txt", mode=0o755))
    found = against(real)
    assert (found.created_outside, found.modified_outside, found.deleted_outside,
            found.kind_changed, found.mode_changed) == (1, 1, 2, 1, 1)
    assert found.outside_paths == 6 and found.diverged
    assert found.sample == (".hooks/post-checkout", "gone.txt", "keep.txt", "old.txt",
                            "out/report.txt", "stamp.txt")
    every = [c.path for c in sorted(real, key=lambda c: c.path)]
    assert found.paths_sha256 == hashlib.sha256(
        json.dumps(every, separators=(",", ":")).encode()).hexdigest()
    assert found.context()["outside_paths"] == 6


def test_totals_past_the_tolerance_and_a_new_exit_status_diverge() -> None:
    within = against((), real_obs=observed(Phase.BOUNDED, memory=100 << 20))
    assert within.totals_over == ()  # 50 MiB * 1.5 + 64 MiB of slack
    beyond = against((), real_obs=observed(Phase.BOUNDED, memory=200 << 20, stdout=1 << 20,
                                           exit_code=3),
                     real_diff=summary(size_after=10 << 20))
    assert beyond.totals_over == ("size_after", "peak_memory_bytes", "stdout_bytes")
    assert beyond.exit_changed and beyond.diverged and beyond.outside_paths == 0


def test_a_profile_may_give_one_total_a_tolerance_of_its_own() -> None:
    bound = radius(observed(), summary())
    real = observed(Phase.BOUNDED, memory=200 << 20)
    profile = load_profile(SHIPPED_ROOT / "profiles" / "standard.yaml")
    loose = profile.model_copy(update={"divergence_tolerances": {"peak_memory_bytes": 4.0}})
    assert divergence(bound, DRY, (), real, summary(), tolerance=profile.tolerances
                      ).totals_over == ("peak_memory_bytes",)
    assert divergence(bound, DRY, (), real, summary(), tolerance=loose.tolerances
                      ).totals_over == ()
    assert loose.tolerances["cpu_time_ns"] == profile.divergence_tolerance


def test_a_hazard_the_dry_run_did_not_show_is_new() -> None:
    assert against((), real_diff=summary(setuid_files=1)).new_hazard


def test_the_radius_digest_binds_every_field() -> None:
    first = radius(observed(), summary(created=2))
    assert first.digest == radius(observed(), summary(created=2)).digest
    assert first.digest != radius(observed(), summary(created=3)).digest
    assert first.digest != radius(observed(exit_code=1), summary(created=2)).digest


paths = st.lists(st.text(alphabet="abc/", min_size=1, max_size=6), unique=True, max_size=20)


@given(paths, st.data())
def test_a_real_run_within_the_dry_runs_paths_never_diverges(
        written: list[str], data: st.DataObject) -> None:
    dry = sorted((change(path) for path in written), key=lambda c: c.path)
    kept = data.draw(st.lists(st.sampled_from(dry), unique=True) if dry else st.just([]))
    real = sorted((change(c.path, content=data.draw(st.text(max_size=5))) for c in kept),
                  key=lambda c: c.path)
    bound = radius(observed(), summary())
    found = divergence(bound, dry, real, observed(Phase.BOUNDED), summary(), tolerance=0)
    assert not found.diverged


@given(paths, st.data())
def test_what_the_real_run_skipped_or_rewrote_is_counted_and_never_divergence(
        written: list[str], data: st.DataObject) -> None:
    dry = sorted((change(path) for path in written), key=lambda c: c.path)
    kept = data.draw(st.lists(st.sampled_from(dry), unique=True) if dry else st.just([]))
    contents = [data.draw(st.sampled_from(["a", "b"])) for _ in kept]
    real = sorted((change(c.path, content=text) for c, text in zip(kept, contents, strict=True)),
                  key=lambda c: c.path)
    found = divergence(radius(observed(), summary()), dry, real, observed(Phase.BOUNDED),
                       summary(), tolerance=0)
    assert not found.diverged
    assert found.dry_only == len(dry) - len(kept)
    assert found.content_changed == contents.count("b")


@given(paths, st.text(alphabet="abc/", min_size=1, max_size=6))
def test_a_path_the_dry_run_never_touched_always_diverges(written: list[str], extra: str) -> None:
    dry = sorted((change(path) for path in written if path != extra), key=lambda c: c.path)
    real = sorted([*dry, change(extra)], key=lambda c: c.path)
    bound = radius(observed(), summary())
    found = divergence(bound, dry, real, observed(Phase.BOUNDED), summary(), tolerance=0)
    assert found.created_outside == 1 and found.sample == (extra,)
