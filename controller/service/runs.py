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
from dataclasses import dataclass
from pathlib import Path

from controller.core.models import MAX_CODE_CHARS, Phase, SubmissionRequest
from controller.core.ports import COMMANDS, RunResult, RunSpec, Sandbox
from controller.errors import RuntimeUnavailableError, WorkspaceError
from controller.service.means import Means

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
    """The runs of one submission under ``root`` (its run directory)."""

    def __init__(self, means: Means, root: Path) -> None:
        self.m = means
        self.root = root
        self._ahead: _Starting | None = None

    def work(self, phase: Phase) -> Path:
        return self.root / PHASE_DIRS[phase] / "work"

    def code(self, phase: Phase) -> Path:
        return self.root / PHASE_DIRS[phase] / "code"

    def start_ahead(self, spec: RunSpec) -> None:
        """Start ``spec``'s sandbox in the background, its mounts empty until it runs."""
        self.discard()
        self._mount(spec)
        self._ahead = _Starting(self.m, spec)

    def run(self, spec: RunSpec, checkout: Checkout) -> RunResult:
        """Run ``spec``: in the sandbox started ahead for it, else in one started now."""
        sandbox: Sandbox | None = None
        if self._ahead is not None and self._ahead.spec.phase is spec.phase:
            ahead, self._ahead = self._ahead, None
            # Started for this very run (same uid, image, profile, paths), or not used.
            sandbox = ahead.wait() if ahead.spec == spec else None
            if sandbox is None:
                ahead.discard()
        try:
            if sandbox is None:
                self._mount(spec)
                sandbox = self.m.runtime.start(spec)
            self._fill(spec, checkout)
        except BaseException:
            if sandbox is not None:
                sandbox.discard()
            raise
        return sandbox.run()

    def release(self, phase: Phase) -> None:
        """Unmount one run's scratch filesystems (its sandbox is gone)."""
        self.m.tmpfs.release(self.root / PHASE_DIRS[phase])

    def discard(self) -> None:
        """The sandbox started ahead, if it never ran: removed (waiting for its start).

        Never raises: an engine that cannot remove it now (restarting, say) leaves a
        labelled container that the next reconcile removes, and the submission has ended
        (or is about to) on its own account."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        try:
            ahead.discard()
        except RuntimeUnavailableError as exc:
            log.warning("%s: the %s sandbox started ahead is left for reconcile: %s",
                        ahead.spec.submission_id, ahead.spec.phase.value, exc)

    def _mount(self, spec: RunSpec) -> None:
        limits = spec.profile.limits
        self.m.tmpfs.release(spec.workspace_dir.parent)
        self.m.tmpfs.mount(spec.workspace_dir, size_bytes=limits.workspace_bytes,
                           inodes=limits.workspace_files)
        self.m.tmpfs.mount(spec.code_dir, size_bytes=CODE_TMPFS_BYTES, inodes=8)

    def _fill(self, spec: RunSpec, checkout: Checkout) -> None:
        request = checkout.request
        self.m.workspaces.checkout(checkout.space, checkout.version, spec.workspace_dir,
                                   request.files)
        try:
            self.m.tmpfs.hand_to_sandbox(spec.workspace_dir, spec.uid)
        except OSError as exc:
            raise WorkspaceError(f"cannot hand the run copy to the sandbox user: {exc}") from exc
        path = spec.code_dir / COMMANDS[request.language][0]
        path.write_text(request.code)
        path.chmod(0o644)


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
