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
    max_deleted_files: int = Field(
        default=20, ge=0, description="A run deleting more workspace files than this rolls back"
    )
    keep_run_dirs: bool = Field(
        default=False, description="Keep per-run scratch directories (debugging only)"
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
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"
