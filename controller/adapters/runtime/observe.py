"""What a finished run showed, from the engine's record of the container, the cgroup's
samples and the captured streams: the ``Observation`` both gates judge."""

from __future__ import annotations

from typing import Any

from controller.adapters.runtime.cgroups import Sample
from controller.adapters.runtime.netns import Traffic
from controller.core.models import AuditSource, Observation, StreamSummary
from controller.core.ports import RunSpec

SIGSYS = 31


def observe(spec: RunSpec, attrs: dict[str, Any], status: dict[str, Any], sample: Sample,
            streams: tuple[StreamSummary, StreamSummary], traffic: Traffic | None, *,
            wall_ms: float, timed_out: bool, tripped: bool, source: AuditSource) -> Observation:
    """``attrs``: the container's inspect record; ``status``: its wait status; ``streams``:
    stdout and stderr as captured; ``traffic``: its network counters (None: unreadable);
    ``tripped``: the kernel logged a seccomp kill of ours."""
    limits, state = spec.profile.limits, attrs.get("State", {})
    exit_code = int(status.get("StatusCode", state.get("ExitCode", -1)))
    # What the status says; the code can exit(128 + n) as well as die of n, so a signal
    # decides nothing on its own where the kernel's own record can be read.
    signal = exit_code - 128 if 128 < exit_code <= 128 + 64 else None
    return Observation(
        phase=spec.phase,
        exit_code=exit_code,
        signal=signal,
        oom_killed=bool(state.get("OOMKilled")) or bool(sample.oom_kills),
        timed_out=timed_out,
        seccomp_killed=tripped or (source is AuditSource.NONE and signal == SIGSYS),
        pids_limit_hit=bool(sample.pids_limit_events) or (
            sample.pids is not None and sample.pids >= limits.pids),
        peak_memory_bytes=sample.memory_peak,
        cpu_time_ns=sample.cpu_ns,
        peak_pids=sample.pids,
        loopback_packets=None if traffic is None else traffic.loopback_packets,
        wall_time_ms=round(wall_ms, 1),
        stdout=streams[0],
        stderr=streams[1],
        image_id=str(attrs.get("Image", "")),
        audit_source=source,
        uid=spec.uid,
    )
