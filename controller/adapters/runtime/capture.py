"""A sandbox's output streams, captured: a capped prefix of each, its digest and the size.

The program chooses how much it writes; the controller keeps at most ``cap`` bytes of it, and
the digest is of exactly what was kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.core.models import StreamSummary


@dataclass
class Capture:
    """One output stream: a capped prefix, its digest and the bytes seen."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    seen: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, chunk: bytes) -> bool:
        """Keep what fits under the cap; return False once the cap is exceeded."""
        self.seen += len(chunk)
        room = self.cap - len(self.data)
        kept = chunk[: max(room, 0)]
        self.data += kept
        self.digest.update(kept)
        return self.seen <= self.cap

    def summary(self) -> StreamSummary:
        return StreamSummary(size=self.seen, sha256=self.digest.hexdigest(),
                             truncated=self.seen > self.cap)


class StreamReader(threading.Thread):
    """Reads both streams to their end; wakes the supervisor at the end or past a cap.

    It never calls the engine itself: the daemon's copy to this stream would block behind a
    reader that stopped reading, and a kill issued from here would wait on it.
    """

    STDERR = 2  # the stream number of stderr in the engine's multiplexed frames

    def __init__(self, sock: Any, frames: Iterator[tuple[int, bytes]], cap: int) -> None:
        """``frames``: (stream, chunk) pairs demultiplexed from ``sock``."""
        super().__init__(daemon=True)
        self.sock, self.frames = sock, frames
        self.out, self.err = Capture(cap), Capture(cap)
        self.wake = threading.Event()
        self.over_cap = threading.Event()
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            for stream, chunk in self.frames:
                capture = self.err if stream == self.STDERR else self.out
                if not capture.add(chunk) and not self.over_cap.is_set():
                    self.over_cap.set()
                    self.wake.set()
        # Whatever ends the stream early (hung up on: OSError; the engine's client's own
        # errors) is kept for the supervisor, which fails the run with it.
        except Exception as exc:
            self.failure = exc
        finally:
            self.wake.set()

    def open_gate(self) -> None:
        """Let the sandbox's first process run the code (``docker.GATE`` waits for a line)."""
        getattr(self.sock, "_sock", self.sock).sendall(b"\n")

    def hang_up(self) -> None:
        """End the stream for this thread: a ``recv`` blocked on it returns at once.

        A plain close would not wake it, and a container still running (the supervisor
        failed before the kill) would keep it blocked for good.
        """
        raw = getattr(self.sock, "_sock", self.sock)
        with contextlib.suppress(OSError, AttributeError):  # closed already, or no socket
            raw.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the attach connection (the socket file object and the socket under it)."""
        raw = getattr(self.sock, "_sock", None)
        self.sock.close()
        if raw is not None:
            raw.close()
