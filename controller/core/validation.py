"""Post-execution validation: the hard invariants checked in code, before any policy.

Pure. A violation here means the bounded run did something the assessment never saw,
so it ends in quarantine; the policy's ``commit`` decision is asked only when none hold.
"""

from __future__ import annotations

from controller.core.models import Diff, Observation
from controller.core.profile import Limits


def hazards(diff: Diff) -> tuple[str, ...]:
    """Hazards a workspace diff must never carry, as human-readable violations."""
    found: list[str] = []
    found += [f"setuid/setgid file: {path}" for path in diff.setuid_files]
    found += [f"device node: {path}" for path in diff.device_nodes]
    found += [f"symlink leaving the workspace: {path}" for path in diff.escaping_symlinks]
    found += [f"special file (fifo/socket): {path}" for path in diff.special_files]
    return tuple(found)


def limit_breaches(observation: Observation, limits: Limits) -> tuple[str, ...]:
    """Limits that should have held but were measured above their value."""
    found: list[str] = []
    if observation.peak_memory_bytes is not None and observation.peak_memory_bytes > (
        limits.memory_bytes
    ):
        found.append(
            f"peak memory {observation.peak_memory_bytes} above limit {limits.memory_bytes}"
        )
    if observation.peak_pids is not None and observation.peak_pids > limits.pids:
        found.append(f"peak pids {observation.peak_pids} above limit {limits.pids}")
    return tuple(found)


def violations(diff: Diff, observation: Observation, limits: Limits) -> tuple[str, ...]:
    """Every hard invariant the bounded run broke; empty when it may go to policy."""
    return hazards(diff) + limit_breaches(observation, limits)


def flag_reason(observation: Observation, planted: tuple[str, ...]) -> str:
    """Why a bounded run is quarantined: a tripwire, an incomplete observation, hazards."""
    parts = []
    if observation.seccomp_killed:
        parts.append("tripwire: the bounded run was killed by seccomp (SIGSYS) after a clean "
                     "dry run")
    if observation.incomplete is not None:
        parts.append(f"the observation is incomplete: {observation.incomplete}")
    if planted:
        parts.append("validation: " + "; ".join(planted))
    if not observation.succeeded:
        parts.append(failure_reason(observation))
    return "; ".join(parts)


def failure_reason(observation: Observation) -> str:
    """Why a bounded run failed: the limits it hit, else its exit code."""
    limits = ", ".join(limit.value for limit in observation.limits_hit)
    detail = f"limit hit: {limits}" if limits else f"exit code {observation.exit_code}"
    return f"bounded run failed ({detail})"
