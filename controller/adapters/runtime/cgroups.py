"""Reading a container's cgroup counters, on cgroup v1 (incl. hybrid) and v2.

A container's cgroup vanishes when it exits, so the runtime samples while it runs and keeps
the maxima. Samples miss what happens between them (a run shorter than one period, a worker
that lives a few milliseconds), so each run's container is also created under a parent cgroup
of its own (``run_parent``), which outlives it: the kernel's own peak memory, CPU time and
peak pids of the whole run are read there once it has ended (``final_sample``). ``Sample``
values are None when a counter could not be read.
"""

from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Sample:
    memory_peak: int | None = None
    cpu_ns: int | None = None
    pids: int | None = None
    pids_limit_events: int | None = None
    oom_kills: int | None = None

    def merge(self, other: Sample) -> Sample:
        """Keep the largest of each counter (all of them only grow, or are peaks)."""
        return Sample(*(_max(a, b) for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int | None, ...]:
        return (self.memory_peak, self.cpu_ns, self.pids, self.pids_limit_events, self.oom_kills)


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


class CgroupReader:
    """Counters of the cgroup(s) a process lives in."""

    def __init__(self, pid: int, paths: dict[str, Path], unified: Path | None) -> None:
        self.pid = pid
        self._paths = paths  # v1: controller -> directory
        self._unified = unified  # v2: the one directory

    @classmethod
    def for_pid(cls, pid: int, owner: str, root: Path = CGROUP_ROOT) -> CgroupReader:
        """The cgroups of ``pid``, kept only where the path names ``owner`` (a container id).

        The process may be gone and its pid reused by the time this reads /proc, and reading
        a stranger's cgroup (the host's root, say) would be worse than reading nothing.
        """
        paths: dict[str, Path] = {}
        unified: Path | None = None
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            _, controllers, relative = line.split(":", 2)
            if owner not in relative:
                continue
            if controllers == "":
                candidate = root / relative.lstrip("/")
                if (candidate / "cgroup.controllers").exists():
                    unified = candidate
                continue
            for controller in controllers.split(","):
                paths[controller] = root / controller / relative.lstrip("/")
        return cls(pid, paths, unified)

    @classmethod
    def for_parent(cls, relative: str, root: Path = CGROUP_ROOT) -> CgroupReader:
        """The counters of a parent cgroup we named (``relative`` to each hierarchy)."""
        paths = {name: root / name / relative for name in ("memory", "cpuacct", "cpu", "pids")
                 if (root / name / relative).is_dir()}
        unified = root / relative if (root / relative / "cgroup.controllers").exists() else None
        return cls(0, paths, None if paths else unified)

    def sample(self) -> Sample:
        if self._unified is not None and not self._paths.get("memory"):
            return self._sample_v2(self._unified)
        return self._sample_v1()

    def _sample_v1(self) -> Sample:
        memory, pids = self._paths.get("memory"), self._paths.get("pids")
        cpu = self._paths.get("cpuacct") or self._paths.get("cpu")
        return Sample(
            memory_peak=_read_int(memory, "memory.max_usage_in_bytes"),
            cpu_ns=_read_int(cpu, "cpuacct.usage"),
            pids=_read_int(pids, "pids.peak") or _read_int(pids, "pids.current")
            or self._tree_size(),
            pids_limit_events=_read_key(pids, "pids.events", "max"),
            oom_kills=_read_key(memory, "memory.oom_control", "oom_kill"),
        )

    def _sample_v2(self, path: Path) -> Sample:
        usage_usec = _read_key(path, "cpu.stat", "usage_usec")
        return Sample(
            memory_peak=_read_int(path, "memory.peak") or _read_int(path, "memory.current"),
            cpu_ns=None if usage_usec is None else usage_usec * 1000,
            pids=_read_int(path, "pids.peak") or _read_int(path, "pids.current"),
            pids_limit_events=_read_key(path, "pids.events", "max"),
            oom_kills=_read_key(path, "memory.events", "oom_kill"),
        )

    def _tree_size(self) -> int | None:
        """Where no pids controller is readable: count the process tree instead."""
        if self.pid <= 0 or (not self._paths and self._unified is None):
            return None  # not proven to be the container's process
        try:
            return 1 + len(psutil.Process(self.pid).children(recursive=True))
        except psutil.Error:
            return None


def run_parent(owner: str, key: str) -> str:
    """The parent cgroup (relative to each hierarchy) of one run's container."""
    return f"sandgate/{_component(owner)}/{_component(key)}"


def _component(name: str) -> str:
    """One path component, whatever the setting holds (never ``..`` or a ``/``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return safe if safe.strip(".") else f"_{safe}"


def final_sample(relative: str, root: Path = CGROUP_ROOT) -> Sample:
    """The kernel's counters for a whole run, read from its parent cgroup after it ended:
    hierarchical peaks and totals that no sampling period can miss."""
    return CgroupReader.for_parent(relative, root).sample()


def remove_parent(relative: str, root: Path = CGROUP_ROOT) -> None:
    """Remove a run's parent cgroup from every hierarchy (empty once its container is gone).

    Never fails the run: one that cannot go now (still busy) is logged and taken by the next
    reconcile (``remove_owned_parents``)."""
    for hierarchy in [root, *(path for path in root.iterdir() if path.is_dir())]:
        directory = hierarchy / relative
        try:
            if directory.is_dir():
                directory.rmdir()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cgroup %s left for the next reconcile: %s", directory, exc)


def remove_owned_parents(owner: str, root: Path = CGROUP_ROOT) -> None:
    """Every run parent of this controller's, left by a crash (reconcile)."""
    if not root.is_dir():
        return
    for hierarchy in [root, *(path for path in root.iterdir() if path.is_dir())]:
        base = hierarchy / "sandgate" / _component(owner)
        try:
            names = [d.name for d in base.iterdir() if d.is_dir()] if base.is_dir() else []
        except OSError as exc:
            log.warning("cannot list %s: %s", base, exc)
            continue
        for name in names:
            remove_parent(f"sandgate/{_component(owner)}/{name}", root)
        try:  # this owner's own level too: empty cgroups still take kernel ids
            base.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                log.warning("cgroup %s left: %s", base, exc)


def _read_int(directory: Path | None, name: str) -> int | None:
    if directory is None:
        return None
    try:
        return int((directory / name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_key(directory: Path | None, name: str, key: str) -> int | None:
    if directory is None:
        return None
    try:
        for line in (directory / name).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    except (OSError, ValueError):
        return None
    return None
