"""Shadow mode: a second bundle decides beside the active one; only the active one counts."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from controller.adapters.policy.bundle import Bundle, bundle_digest
from controller.adapters.policy.cedar import CedarEngine
from controller.core.models import Decision, Gate, ShadowVerdict
from controller.errors import PolicyBundleError

log = logging.getLogger("sandgate.policy")


class ShadowedEngine:
    """A ``PolicyEngine`` that enforces ``active`` and records what ``shadow`` would do."""

    def __init__(self, active: CedarEngine, shadow: CedarEngine | None = None) -> None:
        self.active = active
        self.shadow = shadow
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self.disagreements = 0
        self.shadow_decisions = 0

    @property
    def bundle(self) -> Bundle | None:
        return self.active.bundle

    def reload(self, archive: Path) -> Bundle:
        """Reload both bundles from their directories, archiving each; a broken one raises
        ``PolicyBundleError`` and the bundle it would replace keeps deciding."""
        with self._reloading:  # one reload at a time: the last one read is the one active
            loaded = []
            for engine in (self.active, self.shadow):
                if engine is None:
                    continue
                current = engine.bundle
                if current is None:
                    raise PolicyBundleError("no bundle directory to reload from")
                loaded.append(engine.reload(current.path, archive))
            return loaded[0]

    def digests(self) -> tuple[str, ...]:
        engines = (self.active, self.shadow)
        return tuple(bundle_digest(e.bundle.path) for e in engines
                     if e is not None and e.bundle is not None and e.bundle.path.is_dir())

    def decide(self, gate: Gate, principal: str, resource: str,
               context: dict[str, Any]) -> Decision:
        decision = self.active.decide(gate, principal, resource, context)
        if self.shadow is None:
            return decision
        other = self.shadow.decide(gate, principal, resource, context)
        disagrees = other.outcome is not decision.outcome
        with self._lock:
            self.shadow_decisions += 1
            self.disagreements += int(disagrees)
        verdict = ShadowVerdict(outcome=other.outcome, rules=other.rules,
                                bundle_version=other.bundle_version,
                                bundle_digest=other.bundle_digest, disagrees=disagrees)
        return decision.model_copy(update={"shadow": verdict})
