"""Controller settings: environment variables prefixed ``SANDGATE_``, all with safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository (or installed tree) that ships profiles/ and policies/ beside controller/.
SHIPPED_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDGATE_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "sandgate",
        description="Where the database, keys, workspaces, runs and quarantine evidence live",
    )
    profiles_dir: Path = Field(
        default=SHIPPED_ROOT / "profiles", description="Directory of profile YAML files"
    )
    policy_dir: Path = Field(
        default=SHIPPED_ROOT / "policies" / "default", description="The active policy bundle"
    )
    shadow_policy: Path | None = Field(
        default=None, description="A bundle evaluated beside the active one, never enforced")
    policy_watch_s: float = Field(
        default=2.0, ge=0,
        description="Poll the bundles and profiles for changes this often (0: never)")
    approval_ttl_s: float = Field(
        default=3600.0, gt=0, description="Unanswered approval requests expire to denied")
    max_deleted_files: int = Field(
        default=20, ge=0, description="A run deleting more workspace files than this rolls back"
    )
    owner: str = Field(
        default="sandgate", pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Label value marking this controller's containers (reconcile removes "
                    "only these); give each controller on one engine its own")
    workers: int = Field(default=4, ge=1, le=64, description="Sandboxes running at once")
    queue_size: int = Field(default=64, ge=0, description="Submissions waiting beyond workers")
    max_body_bytes: int = Field(default=16 << 20, ge=1024, description="HTTP body cap (413)")
    rate_per_s: float = Field(default=20.0, gt=0, description="Requests/s per principal")
    rate_burst: int = Field(default=40, ge=1, description="Burst per principal")
    drain_timeout_s: float = Field(default=60.0, ge=0, description="SIGTERM: wait for runs")
    keep_run_dirs: bool = Field(
        default=False, description="Keep per-run directories (debugging only); the tmpfs "
        "behind /workspace and /sandbox is released after every run all the same"
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sandgate.db"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def profile_archive_dir(self) -> Path:
        """Every profile a run used, by digest: what a receipt's profile digest meant."""
        return self.data_dir / "profiles"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"
