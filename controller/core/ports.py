"""The small interfaces the core needs from the outside world.

Adapters implement them: ``runtime.docker`` (and ``runtime.fake`` for unit tests),
``policy.cedar``, ``signing``. The service depends on these Protocols, not on the adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.core.models import AuditSource, Decision, Gate, Language, Observation, Phase
from controller.core.profile import Profile
from controller.errors import RuntimeUnavailableError

SANDBOX_USER = "10001:10001"
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


class SandboxRuntime(Protocol):
    """Runs code in throwaway containers and cleans up after itself."""

    def run(self, spec: RunSpec) -> RunResult:
        """Run to completion (or limit); the container is gone when this returns.

        Raises ``RuntimeUnavailableError`` when the engine fails (not when the code does).
        """
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
    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class KilledFromOutsideError(RuntimeUnavailableError):
    """The engine recorded a kill of the sandbox that Sandgate did not issue; what the run
    showed up to then (``observation``) still decides a quarantine."""

    code = "killed_from_outside"

    def __init__(self, message: str, observation: Observation | None = None) -> None:
        super().__init__(message)
        self.observation = observation
