"""Seccomp kills as the kernel reports them: audit records (type 1326), read from the audit
netlink multicast group where we may (no rate limit), else from ``/dev/kmsg``.

A container's exit code tells only whether its *main* process died of SIGSYS. A child that
calls a tripwire is killed just the same, but its parent may carry on and exit 0; the kernel's
audit record is then the only witness. Without an audit daemon the kernel prints those
records to its log, as ``audit: type=1326 audit(…): … uid=10001 … pid=25387 … sig=31 …
syscall=101 … code=0x80000000``.

Reading ``/dev/kmsg`` needs root; where it cannot be opened, the runtime relies on the exit
code alone. Known gaps, each noted where it matters: with ``auditd`` running the records go to
its log instead, and the kernel rate-limits these prints (``printk_ratelimit``: a burst of 10
every 5 s, shared with its other users), so a kill that follows many others may go unlogged.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.core.models import AuditSource

KMSG = Path("/dev/kmsg")
AUDIT_SECCOMP = 1326
SIGSYS = 31
# SECCOMP_RET_KILL_PROCESS (our tripwires), and SECCOMP_RET_KILL_THREAD (SCMP_ACT_KILL, which a
# profile may use as its default action): both are kills.
KILL_CODES = frozenset({0x80000000, 0x00000000})
# Per read-out: a log flooded during the run cannot hold us forever. Reaching it marks the
# reader ``lost`` (what came after is unread, and a kill may be there): never a silent stop.
MAX_RECORDS = 1_000_000
# printk's rate limit (printk_ratelimit_burst): this many rate-limited prints in one run's
# window (segfault reports, audit records, "callbacks suppressed") may have used up the burst,
# and then a kill record is dropped from /dev/kmsg unseen. The netlink group has no such limit.
PRINTK_BURST = 10
_RATE_LIMITED = ("audit: type=", "audit_lost=", "segfault at", "callbacks suppressed",
                 "trap ", "general protection")
_RECORD_BYTES = 8192  # larger than any one record (the kernel's limit is 1024 + prefix)
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass(frozen=True)
class SeccompKill:
    """One process (or thread) the kernel killed for a syscall its seccomp filter forbids."""

    pid: int
    uid: int
    syscall: int
    comm: str


def _seccomp_fields(record: str) -> dict[str, str] | None:
    """The ``key=value`` fields of a seccomp audit record (``prio,seq,usec,flags;text``, the
    ``/dev/kmsg`` shape both readers give), or None for any other record."""
    _, separator, text = record.partition(";")
    if not separator or not text.startswith(f"audit: type={AUDIT_SECCOMP} "):
        return None
    return {key: value.strip('"') for key, value in _FIELD.findall(text)}


def parse_kill(record: str) -> SeccompKill | None:
    """The seccomp kill in one record, if it is one."""
    fields = _seccomp_fields(record)
    if fields is None:
        return None
    try:
        kill = SeccompKill(pid=int(fields["pid"]), uid=int(fields["uid"]),
                           syscall=int(fields["syscall"]), comm=fields.get("comm", ""))
        signal, code = int(fields["sig"]), int(fields["code"], 16)
    except (KeyError, ValueError):
        return None
    return kill if signal == SIGSYS and code in KILL_CODES else None


def attribute(kills: Iterable[SeccompKill], *, uid: int) -> tuple[SeccompKill, ...]:
    """The kills that count against this run: those of its uid.

    Each submission in flight runs as a uid of its own (``ports.SUBMISSION_UIDS``), which no
    process in the sandbox can change (no capabilities, no new privileges), so a kill in
    another tenant's sandbox at the same time is never charged here. Pids are no witness: a
    tenant that forks fast is handed the pids another run's children had a moment ago.
    """
    return tuple(kill for kill in kills if kill.uid == uid)


class KmsgWatch:
    """The kernel log from the moment of ``open`` on: what was logged before is skipped."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self.lost = False  # records were overwritten unread: a kill may be among them

    @classmethod
    def open(cls, path: Path = KMSG) -> KmsgWatch | None:
        """Start watching (call before the container starts); None when the log is closed to us."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            return None
        return cls(fd)

    def records(self) -> Iterator[str]:
        """Every record logged since ``open`` (or the last call), without continuation lines.

        Past ``PRINTK_BURST`` rate-limited records the log may have dropped some: ``lost``.
        """
        count = limited = 0
        while self._fd is not None:
            try:
                chunk = os.read(self._fd, _RECORD_BYTES)
            except BlockingIOError:
                return
            except BrokenPipeError:
                # The ring wrapped before we read it; the next read resumes at the oldest
                # record left, and the caller fails closed on what may be gone.
                self.lost = True
                continue
            if not chunk:
                return
            for line in chunk.decode(errors="replace").splitlines():
                if line and not line.startswith(" "):
                    if count >= MAX_RECORDS:
                        self.lost = True
                        return
                    count += 1
                    limited += any(mark in line for mark in _RATE_LIMITED)
                    if limited >= PRINTK_BURST:
                        self.lost = True
                    yield line

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


LOG_CODE = 0x7FFC0000  # SECCOMP_RET_LOG: allowed, and logged


def parse_logged(record: str, uid: int) -> int | None:
    """The syscall number of a SECCOMP_RET_LOG record by ``uid``, if the record is one."""
    fields = _seccomp_fields(record)
    if fields is None:
        return None
    try:
        if int(fields["code"], 16) != LOG_CODE or int(fields["uid"]) != uid:
            return None
        return int(fields["syscall"])
    except (KeyError, ValueError):
        return None


NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
_NLMSG_HEADER = struct.Struct("=IHHII")


class AuditSocket:
    """The kernel's audit records from the read-only multicast group (``AUDIT_NLGRP_READLOG``).

    Unlike ``/dev/kmsg``, this path has no print rate limit: the kernel hands every record to
    multicast readers before it prints (or drops) it. Needs CAP_AUDIT_READ (root). Records
    come out in the ``/dev/kmsg`` shape so the same parsers read both.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self.lost = False

    @classmethod
    def open(cls) -> AuditSocket | None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        except OSError:
            return None
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 << 20)
            sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        return cls(sock)

    def records(self) -> Iterator[str]:
        count = 0
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost = True  # the socket overflowed: some records are gone
                continue
            for record in _netlink_records(data):
                if count >= MAX_RECORDS:
                    self.lost = True
                    return
                count += 1
                yield record

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _netlink_records(data: bytes) -> list[str]:
    records, offset = [], 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            break
        text = data[offset + _NLMSG_HEADER.size:offset + length].rstrip(b"\0").decode(
            errors="replace")
        records.append(f"0,0,0,-;audit: type={kind} {text}")
        offset += (length + 3) & ~3
    return records


AuditLog = AuditSocket | KmsgWatch


def read_kills(log: AuditLog, *, uid: int | None = None) -> list[SeccompKill]:
    """The seccomp kills among the records a reader has gathered since it last read.

    With ``uid``, a seccomp record of that uid cut short before its action (printk keeps
    1024 bytes, and a sandbox can make its ``exe=`` path long) counts as a kill: fail closed.
    """
    found = []
    for record in log.records():
        kill = parse_kill(record)
        if kill is None and uid is not None:
            kill = _cut_short(record, uid)
        if kill is not None:
            found.append(kill)
    return found


def _cut_short(record: str, uid: int) -> SeccompKill | None:
    fields = _seccomp_fields(record)
    if fields is None or "code" in fields or fields.get("uid") != str(uid):
        return None  # whole: parse_kill has said what it is
    pid = fields.get("pid", "")
    return SeccompKill(pid=int(pid) if pid.isdigit() else -1, uid=uid, syscall=-1,
                       comm=fields.get("comm", ""))


def audit_source(log: AuditLog | None) -> AuditSource:
    if isinstance(log, AuditSocket):
        return AuditSource.NETLINK
    return AuditSource.KMSG if isinstance(log, KmsgWatch) else AuditSource.NONE


def open_audit_log() -> AuditLog | None:
    """The best reader of seccomp audit records: the netlink group, else ``/dev/kmsg``."""
    return AuditSocket.open() or KmsgWatch.open()


@dataclass(frozen=True)
class KernelSaid:
    """What the kernel logged of one container's cgroup during its run."""

    fork_rejected: bool = False  # the pids limit refused a fork
    oom_kill: bool = False  # the memory limit's OOM killer killed one of its processes


def kernel_said(messages: KmsgWatch | None, container_id: str) -> KernelSaid:
    """Read once, after the run: the kernel's own word, which no sampling period can miss.
    (The engine's ``OOMKilled`` is not enough: on cgroup v1 hosts it can stay false after a
    kill the kernel logged; the cgroup's counter goes with the cgroup.)"""
    if messages is None:
        return KernelSaid()
    fork = oom = False
    for line in messages.records():
        if container_id not in line:
            continue
        fork = fork or "fork rejected by pids controller" in line
        oom = oom or "oom-kill:constraint=" in line
    return KernelSaid(fork_rejected=fork, oom_kill=oom)


def tripwires(kernel_log: AuditLog | None, uid: int) -> tuple[bool, str | None]:
    """Whether the kernel logged a seccomp kill in this run (any process, not only the main),
    and why the answer may be incomplete. Every record is read, however many the run made:
    a flood cannot push a kill past the reader. Without a log (not root, or closed to us) the
    exit status is the only witness, and the observation says which source was in force.
    """
    if kernel_log is None:
        return False, None
    kills = attribute(read_kills(kernel_log, uid=uid), uid=uid)
    if kernel_log.lost:
        return bool(kills), ("kernel audit records were lost or cut short during the run "
                             f"({audit_source(kernel_log).value}); a tripwire kill may be "
                             "among them")
    return bool(kills), None
