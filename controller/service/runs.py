"""The two runs of one submission: their scratch filesystems and their sandboxes.

Each run has a directory of its own under the submission's run directory (``dry``, ``real``):
the workspace copy (``work``) and the code (``code``), each on a fresh tmpfs, the roots of
anonymous filesystems, so nothing in mountinfo tells the runs apart. A container's cold start
is most of a run's cost, so the real run's sandbox is started while the dry run runs: its
mounts exist, empty, and are filled (the workspace copy handed to the sandbox user, the code
written) only when the real run is about to begin, so its times do not age between the
runs. A submission that never reaches its real run discards it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from controller.core.models import MAX_CODE_CHARS, Language, Phase, SubmissionRequest
from controller.core.ports import (
    COMMANDS,
    SUBMISSION_UIDS,
    RunResult,
    RunSpec,
    Sandbox,
    Tmpfs,
)
from controller.core.profile import Profile
from controller.errors import RuntimeUnavailableError, SandboxGoneError, WorkspaceError
from controller.service.means import Means
from controller.service.pairs import Pair, Started, discard_pair

# UTF-8 takes at most 4 bytes a character; the tmpfs rounds up to pages.
CODE_TMPFS_BYTES = 4 * MAX_CODE_CHARS + (64 << 10)
PHASE_DIRS = {Phase.DRY_RUN: "dry", Phase.BOUNDED: "real"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkout:
    """What a run's workspace copy is made of: the version it starts from, with the files
    the request places in it."""

    space: str
    version: int
    request: SubmissionRequest


class Runs:
    """The runs of one submission under ``root`` (its run directory), or in a pooled pair's
    sandboxes and directories once it has adopted one."""

    def __init__(self, means: Means, root: Path) -> None:
        self.m = means
        self.root = root
        self.pair: Pair | None = None  # adopted from the pool: its directories, its sandboxes
        self._waiting: dict[Phase, _Starting | Started] = {}

    def work(self, phase: Phase) -> Path:
        return self._dir(phase) / "work"

    def code(self, phase: Phase) -> Path:
        return self._dir(phase) / "code"

    def claim(self, profile: Profile, language: Language, image: str, submission_id: str
              ) -> int:
        """The submission's sandbox uid: a pooled pair's, if the pool has one ready for its
        profile, language and image (both runs then start nothing), else a free one."""
        pair = self.m.pool.take(profile, language, image) if self.m.pool is not None else None
        if pair is not None:
            try:
                uid = self.m.store.take_held_uid(pair.holder, submission_id)
            except BaseException:  # not taken: the pair is no one's, so it goes now
                discard_pair(self.m.tmpfs, pair)
                raise
            if uid is not None:
                self.pair = pair
                self._waiting = {Phase.DRY_RUN: pair.dry, Phase.BOUNDED: pair.real}
                return uid
            discard_pair(self.m.tmpfs, pair)  # its hold was dropped: not ours to use
        return self.m.store.claim_uid(submission_id, SUBMISSION_UIDS)

    def start_ahead(self, spec: RunSpec) -> None:
        """Start ``spec``'s sandbox in the background, its mounts empty until it runs."""
        self._drop(spec.phase)
        mount_scratch(self.m.tmpfs, spec)
        self._waiting[spec.phase] = _Starting(self.m, spec)

    def run(self, spec: RunSpec, checkout: Checkout) -> RunResult:
        """Run ``spec``: in the sandbox waiting for it (started ahead, or pooled), else in
        one started now."""
        sandbox: Sandbox | None = None
        waiting = self._waiting.pop(spec.phase, None)
        if waiting is not None:
            # Started for this very run (same uid, image, profile, paths), or not used.
            sandbox = waiting.wait() if same_run(waiting.spec, spec) else None
            if sandbox is None:
                _discard(waiting)
        try:
            if sandbox is None:
                mount_scratch(self.m.tmpfs, spec)
                sandbox = self.m.runtime.start(spec)
            fill(self.m, spec, checkout)
        except BaseException:
            if sandbox is not None:
                sandbox.discard()
            raise
        try:
            with self.m.telemetry.running():
                return sandbox.run()
        except SandboxGoneError as exc:
            if waiting is None:
                raise
            # It died waiting (an engine restart): nothing of the code ran, so the run is
            # started afresh, on the mounts already filled for it.
            log.warning("%s: the %s sandbox waiting for it was gone (%s); starting another",
                        spec.submission_id, spec.phase.value, exc)
            with self.m.telemetry.running():
                return self.m.runtime.start(spec).run()

    def release(self, phase: Phase) -> None:
        """Unmount one run's scratch filesystems (its sandbox is gone)."""
        self.m.tmpfs.release(self._dir(phase))

    def discard(self) -> None:
        """Every sandbox still waiting (started ahead or pooled, never run): removed.

        Never raises: an engine that cannot remove one now (restarting, say) leaves a
        labelled container that the next reconcile removes, and the submission has ended
        (or is about to) on its own account."""
        for phase in list(self._waiting):
            self._drop(phase)

    def close(self) -> None:
        """After the submission: nothing waiting, an adopted pair's directories gone."""
        self.discard()
        pair, self.pair = self.pair, None
        if pair is not None:
            discard_pair(self.m.tmpfs, pair, keep_dirs=self.m.rules.keep_run_dirs)

    def _drop(self, phase: Phase) -> None:
        waiting = self._waiting.pop(phase, None)
        if waiting is not None:
            _discard(waiting)

    def _dir(self, phase: Phase) -> Path:
        return (self.pair.root if self.pair is not None else self.root) / PHASE_DIRS[phase]


def same_run(a: RunSpec, b: RunSpec) -> bool:
    """Whether a sandbox started for ``a`` may run ``b``: all but the submission's id (a
    pooled sandbox was started before there was one) the same."""
    return replace(a, submission_id="") == replace(b, submission_id="")


def mount_scratch(tmpfs: Tmpfs, spec: RunSpec) -> None:
    """Fresh, empty scratch filesystems for ``spec``'s workspace copy and code."""
    limits = spec.profile.limits
    tmpfs.release(spec.workspace_dir.parent)
    tmpfs.mount(spec.workspace_dir, size_bytes=limits.workspace_bytes,
                inodes=limits.workspace_files)
    tmpfs.mount(spec.code_dir, size_bytes=CODE_TMPFS_BYTES, inodes=8)


def fill(means: Means, spec: RunSpec, checkout: Checkout) -> None:
    """The workspace copy, handed to the run's uid, and the code: just before the run."""
    request = checkout.request
    means.workspaces.checkout(checkout.space, checkout.version, spec.workspace_dir,
                              request.files)
    try:
        means.tmpfs.hand_to_sandbox(spec.workspace_dir, spec.uid)
    except OSError as exc:
        raise WorkspaceError(f"cannot hand the run copy to the sandbox user: {exc}") from exc
    path = spec.code_dir / COMMANDS[request.language][0]
    path.write_text(request.code)
    path.chmod(0o644)


def _discard(waiting: _Starting | Started) -> None:
    try:
        waiting.discard()
    except RuntimeUnavailableError as exc:
        log.warning("%s: the %s sandbox waiting for its run is left for reconcile: %s",
                    waiting.spec.submission_id, waiting.spec.phase.value, exc)


class _Starting:
    """A sandbox being started on a thread of its own."""

    def __init__(self, means: Means, spec: RunSpec) -> None:
        self.spec = spec
        self._sandbox: Sandbox | None = None
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._start, args=(means,), daemon=True,
                                        name=f"sandgate-start-{spec.submission_id[:8]}")
        self._thread.start()

    def _start(self, means: Means) -> None:
        try:
            self._sandbox = means.runtime.start(self.spec)
        # Kept for ``wait``, which says it; the run then starts its own sandbox, where the
        # same failure (if it recurs) is raised where it can be handled.
        except Exception as exc:
            self._failure = exc

    def wait(self) -> Sandbox | None:
        """The started sandbox; None when starting it failed (the run then starts its own:
        an engine that failed once may not fail twice, and one that does says so then)."""
        self._thread.join()
        if self._failure is not None:
            log.warning("starting %s's %s sandbox ahead failed: %s", self.spec.submission_id,
                        self.spec.phase.value, self._failure)
        return self._sandbox

    def discard(self) -> None:
        self._thread.join()
        if self._sandbox is not None:
            self._sandbox.discard()
