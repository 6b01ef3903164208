"""Controller settings: environment variables prefixed ``SANDGATE_``, all with safe defaults."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.errors import ConfigError

# The repository (or installed tree) that ships profiles/ and policies/ beside controller/.
SHIPPED_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)
OWNER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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
    owner: str | None = Field(
        default=None, pattern=OWNER.pattern,
        description="Label value marking this controller's containers and run cgroups "
                    "(reconcile removes only these). Default: an id made once and kept in "
                    "<data_dir>/owner, so controllers sharing one engine never share it")
    workers: int = Field(default=4, ge=1, le=64, description="Sandboxes running at once")
    queue_size: int = Field(default=64, ge=0, description="Submissions waiting beyond workers")
    max_running_per_principal: int | None = Field(
        default=None, ge=1,
        description="Sandboxes one principal's submissions hold at once, unless its own quota "
                    "says otherwise (`sandgate principals quota`). Default: half the workers, "
                    "rounded up, so the other half is always free for other tenants")
    max_parked_per_principal: int = Field(
        default=16, ge=1,
        description="Submissions one principal may have awaiting approval (they hold no run "
                    "slot); past that, a submission that would wait is denied")
    max_queued_per_principal: int | None = Field(
        default=None, ge=1,
        description="Submissions one principal may have waiting (then 429), unless its own "
                    "quota says otherwise. Default: half the queue, rounded up (at least 1)")
    max_body_bytes: int = Field(default=16 << 20, ge=1024, description="HTTP body cap (413)")
    rate_per_s: float = Field(default=20.0, gt=0, description="Requests/s per principal")
    rate_burst: int = Field(default=40, ge=1, description="Burst per principal")
    drain_timeout_s: float = Field(default=60.0, ge=0, description="SIGTERM: wait for runs")
    log_format: Literal["text", "json"] = Field(default="text", description=(
        "json: one JSON object per line, with the submission and trace ids it is about"))
    header_timeout_s: float = Field(default=10.0, gt=0, description=(
        "A request's headers must be whole this many seconds after the connection opens or "
        "the last response ends; else the connection is closed"))
    body_timeout_s: float = Field(default=30.0, gt=0, description=(
        "Each chunk of a request body must arrive within this many seconds of the last "
        "(else 408)"))
    body_deadline_s: float = Field(default=120.0, gt=0, description=(
        "A whole request body must arrive within this many seconds of the first read of it "
        "(else 408)"))
    auth_failures_per_min: float = Field(default=10.0, gt=0, description=(
        "Failed API-key authentications allowed per client address (IPv6: per /64) a "
        "minute; past that, a failing key is answered 429 (a valid key never is)"))
    auth_cache_s: float = Field(default=5.0, ge=0, description=(
        "A valid key is trusted this long without a database lookup: how long a revoked "
        "key may still work"))
    stream_idle_s: float = Field(default=300.0, gt=0, description=(
        "An event stream with no new event for this long is closed"))
    streams_per_principal: int = Field(default=8, ge=1, description=(
        "Event streams one principal may hold open (then 429)"))
    max_connections: int = Field(default=1000, ge=1, description=(
        "Connections served at once (uvicorn's limit_concurrency); past that, 503"))
    connections_per_source: int = Field(default=256, ge=1, description=(
        "Open connections one client address (IPv6: one /64) may hold; more are closed as "
        "they open. Behind a proxy every connection is the proxy's: raise this to its pool"))
    keep_alive_s: int = Field(default=5, ge=1, description=(
        "An idle keep-alive connection is closed after this many seconds"))
    trust_proxy_headers: bool = Field(default=False, description=(
        "Take the client address from X-Forwarded-For/X-Forwarded-Proto when the connection "
        "comes from forwarded_allow_ips; only behind a proxy that sets them, since anyone "
        "else could use them to pass as any address to the per-address limits"))
    forwarded_allow_ips: str = Field(default="127.0.0.1", description=(
        "Comma-separated addresses of the proxies trusted when trust_proxy_headers is on"))
    keep_run_dirs: bool = Field(
        default=False, description="Keep per-run directories (debugging only); the tmpfs "
        "behind /workspace and /sandbox is released after every run all the same"
    )

    @property
    def owner_file(self) -> Path:
        """Where the generated owner label of this data directory is kept."""
        return self.data_dir / "owner"

    def resolved_owner(self) -> str:
        """The owner label: ``SANDGATE_OWNER`` if set, else the one kept in the data directory
        (made on first use; every process opening the directory reads the same one)."""
        if self.owner is not None:
            return self.owner
        # A data directory an earlier release used had its containers labelled with the old
        # default: that label stays, or a crash's leftovers would never be reconciled.
        first = "sandgate" if self.db_path.exists() else None
        return read_or_make_owner(self.owner_file, first)

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


def read_or_make_owner(path: Path, first: str | None = None) -> str:
    """The owner label kept in ``path``, made there first if there is none.

    A new one (``first``, else a random one) is written to a file of its own, then
    hard-linked into place: the link either appears whole or fails because another process
    linked first, so processes starting at once on one data directory all read back the
    same label.
    """
    if path.exists():  # a vanished or unreadable file is an error (_read_owner), not a cue
        return _read_owner(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    made = first or f"sandgate-{secrets.token_hex(6)}"
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with draft.open("x") as file:
            file.write(made + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process got there first: its label is the one
        else:
            _sync_directory(path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write the owner label to {path}: {exc}") from exc
    finally:
        draft.unlink(missing_ok=True)
    return _read_owner(path)


def _read_owner(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(256)
    except OSError as exc:
        raise ConfigError(f"cannot read the owner label in {path}: {exc}") from exc
    value = raw.decode("utf-8", "replace").strip()
    if not OWNER.fullmatch(value):
        raise ConfigError(
            f"{path} holds {value[:80]!r}, not an owner label (it must match {OWNER.pattern}): "
            "restore it, or set SANDGATE_OWNER to the label this controller's containers "
            "carry; delete it only when none of them is left running (a new label is made, "
            "and reconcile no longer recognises the old one's containers)")
    return value


def _sync_directory(directory: Path) -> None:
    """Make a new directory entry durable (best effort: not every filesystem allows it)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        log.warning("could not open %s to sync it: %s", directory, exc)
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:  # EINVAL on some filesystems: the label still holds, if less durably
        log.warning("could not sync %s: %s", directory, exc)
    finally:
        os.close(descriptor)
