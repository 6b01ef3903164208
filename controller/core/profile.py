"""A profile as the core sees it: its resource limits, image and effective seccomp policy
(loaded and checked by ``controller.profiles``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from controller.core.frozen import Frozen
from controller.core.models import Language
from controller.core.radius import SLACK


class Limits(Frozen):
    """Resource limits of a profile; every run of the profile gets exactly these."""

    memory_bytes: Annotated[int, Field(ge=16 * 2**20, description="Memory, and memory+swap")]
    cpus: Annotated[float, Field(gt=0, le=64, description="CPU quota in cores")]
    pids: Annotated[int, Field(ge=4, le=4096, description="Max processes and threads")]
    nofile: Annotated[int, Field(ge=16, le=65536, description="Max open files")]
    wall_time_s: Annotated[float, Field(gt=0, le=3600, description="Wall-clock limit")]
    tmpfs_bytes: Annotated[int, Field(ge=2**20, description="Size of /tmp, and of /dev/shm")]
    tmpfs_inodes: Annotated[int, Field(ge=64, description="Inodes of the /tmp tmpfs")]
    output_bytes: Annotated[int, Field(ge=1024, description="Cap on stdout and on stderr")]
    workspace_bytes: Annotated[int, Field(ge=0, description="Cap on the workspace after a run; "
                                          "also the size of its tmpfs during the run")]
    workspace_files: Annotated[int, Field(ge=16, le=1_000_000, description=(
        "Inodes of the workspace's tmpfs during a run (files, directories and links)"))] = 10_000
    file_bytes: Annotated[int | None, Field(ge=1024, description=(
        "RLIMIT_FSIZE: the largest file a process may write or extend (truncate included); "
        "default: the larger of workspace_bytes and tmpfs_bytes"))] = None

    @property
    def effective_file_bytes(self) -> int:
        return self.file_bytes or max(self.workspace_bytes, self.tmpfs_bytes)


class PoolSize(Frozen):
    """How many started sandboxes a profile keeps waiting for submissions (pairs: a dry run's
    and a real run's, one uid), per language it names. ``min``: kept ready; a miss (a
    submission that found none) raises the target by one, up to ``max``; an idle member
    older than ``ttl_s`` is replaced, and the target falls back towards ``min``."""

    min: Annotated[int, Field(ge=0, le=64)] = 0
    max: Annotated[int, Field(ge=0, le=64)] = 0
    ttl_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    languages: tuple[Language, ...] = (Language.PYTHON,)

    @model_validator(mode="after")
    def _ordered(self) -> PoolSize:
        if self.max < self.min:
            raise ValueError(f"pool: max ({self.max}) is below min ({self.min})")
        return self


class Profile(Frozen):
    """A loaded, validated profile: limits, image and the effective seccomp policy."""

    name: str
    description: str = ""
    image: str
    seccomp_file: str
    limits: Limits
    network: bool = False
    accept_unaudited: bool = Field(False, description=(
        "Run even when no kernel audit source is readable (a child's tripwire then goes "
        "unseen); by default such runs are refused"))
    tripwires: tuple[str, ...]
    pool: PoolSize = Field(default_factory=PoolSize, description=(
        "Started sandboxes kept waiting for this profile's submissions (none by default)"))
    divergence_tolerance: float = Field(0.5, ge=0, le=100, description=(
        "How far past the dry run's totals (workspace bytes, peak memory, pids, CPU time, "
        "output sizes) a real run may go, as a fraction, before it diverges; a few absolute "
        "units are always allowed (core.radius.SLACK)"))
    divergence_tolerances: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict, description=(
            "Per-total fractions that replace divergence_tolerance for the totals they name "
            "(e.g. cpu_time_ns for a workload whose CPU time varies)"))

    @property
    def tolerances(self) -> dict[str, float]:
        """The fraction each total of a radius may grow by before a real run diverges."""
        return {name: self.divergence_tolerances.get(name, self.divergence_tolerance)
                for name in SLACK}

    @field_validator("divergence_tolerances")
    @classmethod
    def _known_totals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SLACK))
        if unknown:
            raise ValueError(f"no such total: {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(SLACK))})")
        return value
    seccomp: dict[str, object] = Field(description="Effective seccomp JSON, tripwires merged")
    digest: str = Field(description="sha256 over the profile and its effective seccomp policy")
