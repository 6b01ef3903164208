"""Hot reload: watch the policy bundles and the profiles directory, swap on change.

A change that does not load is logged and refused; what was loaded keeps deciding.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from controller.adapters.policy.shadow import ShadowedEngine
from controller.core.ports import SubmissionStore
from controller.errors import ConfigError
from controller.service.controller import Controller

log = logging.getLogger("sandgate.reload")


def directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


Reloadable = Controller[SubmissionStore, ShadowedEngine]


def watch(controller: Reloadable, profiles_dir: Path, archive: Path, interval: float,
          stop: threading.Event) -> None:
    """A thread's body: poll every ``interval`` seconds until ``stop`` is set."""
    seen = (controller.engine.digests(), directory_digest(profiles_dir))
    while not stop.wait(interval):
        try:
            seen = _reload_changed(controller, profiles_dir, archive, seen)
        except Exception:
            # The watcher must outlive anything a half-written file can throw at it.
            log.exception("hot reload failed; the loaded bundles and profiles stay")


def _reload_changed(controller: Reloadable, profiles_dir: Path, archive: Path,
                    seen: tuple[tuple[str, ...], str]) -> tuple[tuple[str, ...], str]:
    """Reload what changed since ``seen``; return what is seen now."""
    now = (controller.engine.digests(), directory_digest(profiles_dir))
    if now[0] != seen[0]:
        try:
            with controller.telemetry.reloading("policies"):
                bundle = controller.engine.reload(archive)
            log.info("policy bundle %s@%s loaded (%s)", bundle.name, bundle.version,
                     bundle.digest)
        except ConfigError as exc:
            log.error("policy bundle refused; the previous one keeps deciding: %s", exc)
    if now[1] != seen[1]:
        try:
            loaded = controller.reload_profiles(profiles_dir)
            log.info("profiles reloaded: %s", ", ".join(f"{p.name} {p.digest}"
                                                        for p in loaded.values()))
        except ConfigError as exc:
            log.error("profiles refused; the loaded ones stay: %s", exc)
    return now
