"""A run's network traffic, counted by its own network namespace.

A sampler that reads ``/proc/<pid>/net/dev`` while the code runs misses a program that sends
one packet and exits before the first sample, and that would fail open. So the runtime holds
the container's network namespace (a file descriptor keeps it alive past the container's
end) from before the code starts: the sandbox's first process waits at a gate until the
handle is taken. Once the run has ended, a short-lived thread enters the namespace and reads
the kernel's counters: every packet the run sent is in them.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
LOOPBACK = "lo"


@dataclass(frozen=True)
class Traffic:
    """Packets a run sent over its loopback, the interface every run has.

    A network a profile grants is not counted here: the engine deletes the container's
    interface when it stops, with its counters, so they cannot be read after the run."""

    loopback_packets: int


class NetnsError(OSError):
    """The namespace could not be held or read: the run's traffic is unknown."""


class HeldNetns:
    """The network namespace of one container's first process, held open."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def hold(cls, pid: int, owner: str) -> HeldNetns:
        """Hold the namespace of ``pid``, which must live in a cgroup naming ``owner`` (the
        container's id): the handle is taken while that process waits at its gate, so the
        pid cannot have been reused, but a stranger's namespace must never be read."""
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if owner not in Path(f"/proc/{pid}/cgroup").read_text():
                raise NetnsError(f"process {pid} is not in the sandbox container's cgroup")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def traffic(self) -> Traffic:
        """The namespace's counters, read from inside it (by a thread that then ends: a
        thread's network namespace is its own, and this one is never reused)."""
        found: list[str | OSError] = []
        reader = threading.Thread(target=_read_inside, args=(self._fd, found),
                                  name="sandgate-netns", daemon=True)
        reader.start()
        reader.join()
        if not found or isinstance(found[0], OSError):
            raise NetnsError(f"cannot read the sandbox's network counters: {found or 'none'}")
        return parse(found[0])

    def counted(self) -> tuple[Traffic | None, str | None]:
        """The traffic, or None and why it is unknown (an observation then is incomplete:
        a run whose packets cannot be counted never commits)."""
        try:
            return self.traffic(), None
        except (NetnsError, ValueError) as exc:  # ValueError: counters that are no numbers
            return None, f"cannot count the sandbox's packets: {exc}"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_inside(fd: int, found: list[str | OSError]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        found.append(Path("/proc/thread-self/net/dev").read_text())
    except OSError as exc:
        found.append(exc)


def parse(dev: str) -> Traffic:
    """``/proc/net/dev``: two header lines, then ``name: rx_bytes rx_packets … tx_bytes
    tx_packets …`` (eight receive fields, then transmit)."""
    for line in dev.splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) < 10:
            raise NetnsError(f"unreadable /proc/net/dev line: {line!r}")
        if name.strip() == LOOPBACK:
            return Traffic(loopback_packets=int(values[9]))  # what goes out comes back in
    raise NetnsError("the sandbox's network namespace has no loopback")
