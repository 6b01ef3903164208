"""What a job works with: the adapters behind the core's ports, the controller's own
directories and the rules set for it; handed to each job whole, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.adapters.fs.workspaces import Workspaces
from controller.core.models import Submission
from controller.core.ports import PolicyEngine, SandboxRuntime, SubmissionStore, Tmpfs
from controller.service.pairs import PairSource
from controller.service.sealing import Sealer
from controller.service.telemetry import Telemetry


@dataclass(frozen=True)
class Paths:
    runs: Path
    quarantine: Path
    profiles: Path | None = None  # the archive of every profile loaded, by digest
    data: Path | None = None  # the data directory holding them all

    def roots(self) -> list[Path]:
        """The controller's own directories: never named to a client or in a receipt."""
        return [path for path in (self.data, self.runs, self.quarantine, self.profiles)
                if path is not None]


@dataclass(frozen=True)
class Rules:
    max_deleted_files: int = 20  # a bigger deletion needs a human (admission, assessment)
    max_parked: int = 16  # per principal: requests awaiting a human hold no slot
    keep_run_dirs: bool = False  # for debugging: run directories are left after the run


@dataclass(frozen=True)
class Means:
    store: SubmissionStore
    runtime: SandboxRuntime
    engine: PolicyEngine
    workspaces: Workspaces
    tmpfs: Tmpfs
    sealer: Sealer
    announce: Callable[[Submission], None]
    paths: Paths
    rules: Rules
    telemetry: Telemetry
    pool: PairSource | None = None  # started sandboxes waiting for submissions
