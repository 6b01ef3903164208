"""The Cedar policy engine (``cedarpy``) behind the ``PolicyEngine`` interface."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cedarpy

from controller.adapters.policy.bundle import Bundle, archive_bundle, load_bundle
from controller.core import untrusted
from controller.core.gate import rules_of, silence, to_outcome
from controller.core.models import QUARANTINE_EFFECT, Decision, Gate, Outcome
from controller.errors import PolicyBundleError


class CedarEngine:
    """Evaluates the active bundle; each decision pins the bundle it was taken with."""

    def __init__(self, bundle: Bundle | None) -> None:
        self._lock = threading.Lock()
        self._bundle = bundle
        self._policy_set = cedarpy.PolicySet.from_str(bundle.text) if bundle else None
        self._schema = cedarpy.Schema.from_str(bundle.schema) if bundle else None

    @classmethod
    def from_path(cls, root: Path) -> CedarEngine:
        return cls(load_bundle(root))

    @property
    def bundle(self) -> Bundle | None:
        return self._bundle

    def reload(self, root: Path, archive: Path | None = None) -> Bundle:
        """Swap in a new bundle atomically; a broken one raises and the old one stays. With
        ``archive``, the bundle is archived by digest before it decides anything."""
        bundle = load_bundle(root)
        try:
            policy_set = cedarpy.PolicySet.from_str(bundle.text)
            schema = cedarpy.Schema.from_str(bundle.schema)
        except ValueError as exc:
            raise PolicyBundleError(f"{root}: cannot be loaded: {exc}") from exc
        if archive is not None:
            archive_bundle(bundle, archive)
        with self._lock:
            self._bundle, self._policy_set, self._schema = bundle, policy_set, schema
        return bundle

    def decide(self, gate: Gate, principal: str, resource: str,
               context: dict[str, Any]) -> Decision:
        with self._lock:
            bundle, policy_set, schema = self._bundle, self._policy_set, self._schema
        if bundle is None or policy_set is None:
            return silence(gate, "no policy bundle is loaded")
        request = {
            "principal": f'Agent::"{_escape(principal)}"',
            "action": f'Action::"{gate.value}"',
            "resource": f'Workspace::"{_escape(resource)}"',
            # Sizes the sandbox chose can pass Cedar's 64-bit Long; past it is past any limit.
            "context": untrusted.saturate(context),
        }
        try:
            # The parsed schema makes cedar check the context's shape on every request.
            result = cedarpy.is_authorized(request, policy_set, [], schema=schema)
        except (ValueError, RuntimeError, TypeError) as exc:
            return _pinned(silence(gate, f"policy engine error: {exc}"), bundle)
        errors = tuple(str(err) for err in result.diagnostics.errors)
        infos = [bundle.policies[key] for key in result.diagnostics.reasons
                 if key in bundle.policies]
        outcome = to_outcome(result.allowed, errors)
        effects = {i.annotations.get("effect") for i in infos if i.effect == "forbid"}
        decision = Decision(
            gate=gate,
            outcome=outcome,
            rules=rules_of([i.id for i in infos], {i.id: i.reason for i in infos}),
            errors=errors,
            effect=QUARANTINE_EFFECT if outcome is Outcome.DENY and QUARANTINE_EFFECT in effects
            else None,
        )
        return _pinned(decision, bundle)


def _pinned(decision: Decision, bundle: Bundle) -> Decision:
    return decision.model_copy(
        update={"bundle_name": bundle.name, "bundle_version": bundle.version,
                "bundle_digest": bundle.digest}
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')

