"""Policy test cases: a bundle's ``tests/*.yaml`` say what the bundle must decide.

Each case names an action, overrides some of the context (merged over a clean run's), and
expects an outcome (Cedar's raw answer: PERMIT or DENY; for ``run_unattended`` a DENY means
"needs approval") and, optionally, the exact determining rule ids and the ``effect`` of the
refusal (``quarantine``; ``none`` for a plain refusal).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.adapters.policy.cedar import CedarEngine
from controller.core.gate import run_summary
from controller.core.models import DiffSummary, Gate, Observation, Phase, StreamSummary
from controller.core.radius import Divergence
from controller.errors import PolicyBundleError

_EMPTY = StreamSummary(size=0, sha256=hashlib.sha256(b"").hexdigest())


@dataclass(frozen=True)
class Case:
    name: str
    action: Gate
    context: dict[str, Any]
    expect: str
    rules: tuple[str, ...] | None
    source: str
    effect: str | None = None  # "none": a refusal without an effect (a rollback at commit)


@dataclass(frozen=True)
class Result:
    case: Case
    outcome: str
    rules: tuple[str, ...]
    errors: tuple[str, ...]
    effect: str | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == self.case.expect and (
            self.case.rules is None or tuple(sorted(self.rules)) == tuple(sorted(self.case.rules))
        ) and (self.case.effect is None or self.case.effect == (self.effect or "none"))

    def describe(self) -> str:
        got = f"{self.outcome} {list(self.rules)} effect {self.effect or 'none'}" + (
            f" errors={list(self.errors)}" if self.errors else "")
        want = f"{self.case.expect}" + (f" {list(self.case.rules)}" if self.case.rules
                                        is not None else "") + (
            f" effect {self.case.effect}" if self.case.effect is not None else "")
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.case.source}: {self.case.name}: expected {want}, got {got}"


def clean_context(action: Gate) -> dict[str, Any]:
    """The context of an ordinary submission whose runs changed nothing."""
    clean = run_summary(Observation(phase=Phase.DRY_RUN, exit_code=0, wall_time_ms=10.0,
                                    stdout=_EMPTY, stderr=_EMPTY, image_id="sha256:test"))
    context: dict[str, Any] = {
        "request": {"language": "python", "code_bytes": 10, "files": 0},
        "profile": {"name": "standard", "network": False, "memory_bytes": 268435456,
                    "pids": 64, "wall_time_s": 10, "workspace_bytes": 104857600},
        "config": {"max_deleted_files": 20},
    }
    if action is not Gate.ADMISSION:
        context.update(dry_run=clean, dry_run_diff=DiffSummary(changes_sha256="").counts())
    if action is Gate.VALIDATION:
        context.update(bounded_run=dict(clean), diff=DiffSummary(changes_sha256="").counts(),
                       divergence=Divergence().context())
    return context


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def load_cases(root: Path) -> list[Case]:
    cases = []
    for path in sorted((root / "tests").glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or []
            for index, item in enumerate(raw):
                cases.append(Case(
                    name=str(item.get("name", f"case {index}")), action=Gate(item["action"]),
                    context=dict(item.get("context") or {}), expect=str(item["expect"]),
                    rules=tuple(item["rules"]) if "rules" in item else None,
                    source=path.name,
                    effect=str(item["effect"]) if "effect" in item else None))
        except (OSError, yaml.YAMLError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise PolicyBundleError(f"{path}: bad test case: {exc}") from exc
    if not cases:
        raise PolicyBundleError(f"{root / 'tests'}: the bundle has no test case (*.yaml)")
    return cases


def run_cases(root: Path) -> list[Result]:
    """Load the bundle (validated as at reload) and decide every case with it."""
    engine = CedarEngine.from_path(root)
    results = []
    for case in load_cases(root):
        context = merge(clean_context(case.action), case.context)
        decision = engine.decide(case.action, "test-agent", "test-workspace", context)
        results.append(Result(case, decision.outcome.value,
                              tuple(rule.id for rule in decision.rules), decision.errors,
                              decision.effect))
    return results
