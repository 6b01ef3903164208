"""Who uses a data directory: one service, or any number of one-shot commands; never both.

A service reconciles when it starts (every container of its owner label is removed, every
interrupted submission ended) and keeps a pool of started sandboxes while it runs; so does
``sandgate reconcile``. Either would wreck the other's work, or a one-shot run's, if both
ran on one data directory: the service and ``reconcile`` hold it alone (an exclusive
``flock``), one-shot runs together (a shared one). The kernel drops a lock with its process,
however it ends: a crash never leaves the directory locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from controller.errors import ConfigError, DataDirInUseError

LOCK_NAME = ".lock"
_held: list[int] = []  # descriptors kept open (and locks held) for the process's life


def hold(data_dir: Path, *, alone: bool, who: str) -> None:
    """Lock ``data_dir`` for the rest of this process: ``alone`` (a service, a reconcile)
    or shared with other one-shot commands; ``DataDirInUseError`` if it cannot be now."""
    path = data_dir / LOCK_NAME
    # Never through a link: the holder's name is written into this file.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:  # a link (ELOOP), a directory...: refused, never used
        raise ConfigError(f"cannot open the lock file {path}: {exc.strerror}; it must be "
                          "a regular file (remove what is there)") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"the lock file {path} is not a regular file; remove it")
        fcntl.flock(fd, (fcntl.LOCK_EX if alone else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _holder(path)
        raise DataDirInUseError(
            f"the data directory {data_dir} is in use by "
            f"{holder or 'one-shot commands (sandgate run, probe)'}; {who} needs it "
            f"{'alone' if alone else 'shared with other one-shot commands only'}") from None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it now (shared holders: nobody to name, so the last service's name goes).
    os.ftruncate(fd, 0)
    if alone:
        os.write(fd, f"{who} (pid {os.getpid()})\n".encode())
    _held.append(fd)


def _holder(path: Path) -> str:
    """Who holds it alone, as it wrote itself down (empty when shared holders have it).
    Read only to word the refusal, which stands whatever this read finds: unreadable, the
    refusal names no one."""
    # Quiet on purpose: the caller refuses either way (fails closed); this only names who.
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().strip()[:200]
    return ""
