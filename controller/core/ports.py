"""The small interfaces the service needs from the outside world.

Adapters implement them: ``adapters.runtime.docker`` (``adapters.runtime.fake`` beside it),
``adapters.policy.shadow``, ``adapters.signing``, ``adapters.fs.tmpfs`` (a plain-directory
stand-in beside it) and ``adapters.store``. The service depends on these Protocols, never on
an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.core.models import (
    AuditSource,
    Decision,
    Diff,
    DiffSummary,
    Gate,
    Language,
    Observation,
    Phase,
    State,
    Submission,
)
from controller.core.profile import Profile
from controller.errors import RuntimeUnavailableError

SANDBOX_UID = 10001
# One uid (and gid) per submission in flight, from this range (the image names each one
# ``sandbox``): a seccomp kill is charged by uid to the run that caused it, never to another
# tenant's run at the same time, and per-uid kernel accounting (RLIMIT_NPROC, message queues,
# keyrings) is not shared. SANDBOX_UID itself is kept for the tools (probes, learn).
SUBMISSION_UIDS = range(10002, 11025)
WORKSPACE_MOUNT = "/workspace"
CODE_MOUNT = "/sandbox"
OWNER_LABEL = "dev.sandgate.owner"
SUBMISSION_LABEL = "dev.sandgate.submission"
PHASE_LABEL = "dev.sandgate.phase"

# Identical in both runs, so code cannot tell the rehearsal from the real thing.
SANDBOX_ENV: Mapping[str, str] = {
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TMPDIR": "/tmp",
}

# Where each language's code is written in the code mount, and the command that runs it.
COMMANDS: Mapping[Language, tuple[str, tuple[str, ...]]] = {
    Language.PYTHON: ("main.py", ("python3", f"{CODE_MOUNT}/main.py")),
    Language.SH: ("main.sh", ("/bin/sh", f"{CODE_MOUNT}/main.sh")),
}


@dataclass(frozen=True)
class RunSpec:
    """One container run, fully described; the runtime adds nothing of its own."""

    submission_id: str
    phase: Phase
    profile: Profile
    command: tuple[str, ...]
    workspace_dir: Path
    code_dir: Path
    image: str  # an image id from ``image_id``, resolved once: both runs use the same one
    network: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: dict(SANDBOX_ENV))
    uid: int = SANDBOX_UID  # also the gid


@dataclass(frozen=True)
class RunResult:
    observation: Observation
    stdout: bytes
    stderr: bytes
    container_changes: tuple[tuple[str, str], ...] = ()


class Sandbox(Protocol):
    """A started sandbox whose code has not run yet: it waits for ``run``.

    Its workspace and code directories (the spec's) are mounted already and are read only
    when it runs, so they may be filled after it started."""

    def run(self) -> RunResult:
        """Run to completion (or limit), once; the code and everything it started have
        ended when this returns, and the sandbox is removed (then, or moments later by the
        runtime, off the path of the submission).

        Raises ``RuntimeUnavailableError`` when the engine fails (not when the code does).
        """
        ...

    def discard(self) -> None:
        """Remove it unrun (or after its run: then nothing is left to do)."""
        ...


class SandboxRuntime(Protocol):
    """Runs code in throwaway containers and cleans up after itself."""

    def start(self, spec: RunSpec) -> Sandbox:
        """Create and start a sandbox for ``spec``, waiting for its run: the costly part of
        a run that needs neither its workspace nor its code.

        Raises ``RuntimeUnavailableError`` when the engine fails.
        """
        ...

    def run(self, spec: RunSpec) -> RunResult:
        """``start(spec).run()``."""
        ...

    def remove_owned(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove every container this controller labelled, except for ``keep`` submissions."""
        ...

    def image_id(self, image: str) -> str:
        """The id (``sha256:…``) ``image`` names now; a tag may move, an id does not.

        Raises ``RuntimeUnavailableError`` when the engine cannot resolve it.
        """
        ...

    def ping(self) -> None:
        """Raise ``RuntimeUnavailableError`` unless the engine answers."""
        ...

    def audit_source(self) -> AuditSource:
        """Where runs would read the kernel's seccomp kill records (NONE: nowhere)."""
        ...


class PolicyEngine(Protocol):
    """Answers one gate question for one submission."""

    def decide(self, gate: Gate, principal: str, resource: str,
               context: dict[str, Any]) -> Decision:
        """Never raises: engine trouble is a ``SILENCE`` decision carrying the error."""
        ...


class Signer(Protocol):
    """Signs receipts (DSSE) with the active key."""

    @property
    def key_id(self) -> str: ...

    def envelope(self, payload: bytes) -> str:
        """The receipt's DSSE envelope over ``payload``, as one line of JSON."""
        ...

    def handover(self, outgoing: str | None, sequence: int) -> dict[str, Any] | None:
        """The rotation record the receipt at ``sequence`` carries when ``outgoing`` (the key
        of the receipt before it) is another key; None when no key changes hands."""
        ...


class Tmpfs(Protocol):
    """Scratch filesystems for a run's copies, mounted on the run directory and released in
    one step whatever they hold; and the trees on them handed to the sandbox user and back."""

    def mount(self, target: Path, *, size_bytes: int, inodes: int) -> None:
        """A fresh, empty filesystem on ``target`` (created if missing), capped as given."""
        ...

    def release(self, root: Path) -> None:
        """Let go of every scratch filesystem under ``root`` (their contents with them)."""
        ...

    def mounted(self, root: Path) -> bool:
        """Whether a scratch filesystem is mounted at or under ``root``."""
        ...

    def hand_to_sandbox(self, root: Path, uid: int) -> None:
        """Let the run's user (``uid``, also its gid) write the tree at ``root``."""
        ...

    def hand_to_root(self, root: Path) -> None:
        """Take a tree back: no longer the sandbox user's, no setuid/setgid bit anywhere."""
        ...


class Terminal(Protocol):
    """The transaction a submission ends in (``SubmissionStore.terminal``)."""

    sequence: int  # the receipt's place in the log
    previous: str | None  # the payload digest of the receipt before it

    def swap_version(self, owner: str, workspace: str, base: int, new: int,
                     tree_digest: str) -> None:
        """Compare-and-swap; ``CommitConflictError`` if another commit moved it first."""
        ...

    def append(self, before: Submission, after: Submission, envelope: str,
               digest: str) -> None:
        """Write the terminal record ``after`` over ``before``, and its receipt."""
        ...


class SubmissionStore(Protocol):
    """The durable record of submissions, as the service drives them: every move persisted
    before the side effect it announces; the terminal one with its receipt."""

    def insert(self, submission: Submission,
               idempotency: tuple[str, str] | None = None) -> Submission: ...

    def get(self, submission_id: str) -> Submission | None: ...

    def move(self, submission: Submission, target: State, **changes: object) -> Submission: ...

    def update(self, submission: Submission) -> Submission: ...

    def terminal(self) -> AbstractContextManager[Terminal]: ...

    def keep_run(self, submission_id: str, phase: Phase, diff: Diff | None,
                 outputs: dict[str, bytes]) -> DiffSummary | None: ...

    def changes(self, submission_id: str, phase: Phase, after: int = -1,
                limit: int = 100) -> list[tuple[int, dict[str, object]]]: ...

    def claim_uid(self, submission_id: str, uids: range, wanted: int | None = None) -> int: ...

    def release_uid(self, submission_id: str) -> None: ...

    def hold_uid(self, holder: str, owner: str, uids: range) -> int: ...

    def take_held_uid(self, holder: str, submission_id: str) -> int | None: ...

    def drop_uid_holds(self, owner: str, holder: str | None = None) -> None: ...

    def open_workspace(self, owner: str, name: str) -> tuple[int, str]: ...

    def parked(self, agent: str | None = None, updated_before: str | None = None,
               limit: int = 1000) -> list[str]: ...

    def in_flight(self) -> list[Submission]: ...

    def owner_of(self, submission_id: str) -> tuple[str, str] | None: ...

    def events(self, submission_id: str,
               after: int = 0) -> list[tuple[int, str | None, str, str]]: ...

    def signer_of(self, sequence: int) -> str | None: ...


class KilledFromOutsideError(RuntimeUnavailableError):
    """The engine recorded a kill of the sandbox that Sandgate did not issue; what the run
    showed up to then (``observation``) still decides a quarantine."""

    code = "killed_from_outside"

    def __init__(self, message: str, observation: Observation | None = None) -> None:
        super().__init__(message)
        self.observation = observation
