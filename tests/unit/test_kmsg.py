"""Kernel audit records of seccomp kills: parsed, attributed, read from where the watch began."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.adapters.runtime.kmsg import (
    PRINTK_BURST,
    KernelSaid,
    KmsgWatch,
    SeccompKill,
    attribute,
    kernel_said,
    parse_kill,
    read_kills,
)

CHILD_KILL = ('5,1047,1477084760,-;audit: type=1326 audit(1795314107.332:14): auid=4294967295 '
              'uid=10001 gid=10001 ses=4294967295 pid=25387 comm="python3" '
              'exe="/usr/bin/python3.11" sig=31 arch=c000003e syscall=101 compat=0 '
              'ip=0x7f8f394a634a code=0x80000000')


def test_a_seccomp_kill_record_is_parsed() -> None:
    assert parse_kill(CHILD_KILL) == SeccompKill(pid=25387, uid=10001, syscall=101,
                                                 comm="python3")


def test_other_records_are_not_kills() -> None:
    logged_only = CHILD_KILL.replace("sig=31", "sig=0").replace("code=0x80000000",
                                                                  "code=0x7ffc0000")
    errno = CHILD_KILL.replace("code=0x80000000", "code=0x50000")
    assert parse_kill(logged_only) is None and parse_kill(errno) is None
    assert parse_kill("6,1034,1473482910,-;docker0: port 1 entered blocking state") is None
    assert parse_kill("5,1,1,-;audit: type=1326 pid=oops sig=31") is None


def test_kills_are_attributed_by_the_runs_uid_alone() -> None:
    # A pid is no witness: another tenant that forks fast reuses the pids this run had.
    reused = SeccompKill(pid=7, uid=10005, syscall=101, comm="x")
    child = SeccompKill(pid=8, uid=10001, syscall=101, comm="x")
    host = SeccompKill(pid=9, uid=0, syscall=101, comm="x")
    assert attribute([reused, child, host], uid=10001) == (child,)


def logged_after_open(tmp_path: Path, text: str) -> KmsgWatch:
    """A watch on a stand-in kernel log, and ``text`` logged after it opened."""
    log = tmp_path / "kmsg"
    log.write_text("")
    watch = KmsgWatch.open(log)
    assert watch is not None
    with log.open("a") as handle:
        handle.write(text)
    return watch


def test_a_kill_record_cut_short_counts_as_a_kill_of_its_uid(tmp_path: Path) -> None:
    cut = CHILD_KILL[:CHILD_KILL.index(" sig=31")]  # printk kept 1024 bytes of a long exe=
    watch = logged_after_open(tmp_path, cut + "\n" + cut.replace("uid=10001", "uid=10009") + "\n")
    assert [(k.pid, k.uid) for k in read_kills(watch, uid=10001)] == [(25387, 10001)]
    watch.close()


def test_the_watch_reads_only_what_was_logged_after_it_opened(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text(CHILD_KILL + "\n")  # before the run: not ours
    watch = KmsgWatch.open(log)
    assert watch is not None
    with log.open("a") as handle:
        handle.write("6,1048,1,-;unrelated\n SUBSYSTEM=continuation\n" + CHILD_KILL + "\n")
    assert [kill.pid for kill in read_kills(watch)] == [25387]
    assert read_kills(watch) == []
    watch.close()
    assert KmsgWatch.open(tmp_path / "missing") is None


def test_a_flood_past_the_cap_marks_the_reader_lost_never_stops_silently(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.adapters.runtime import kmsg

    monkeypatch.setattr(kmsg, "MAX_RECORDS", 50)
    # The kill comes after the flood.
    watch = logged_after_open(tmp_path, "".join(
        f"6,{n},1,-;harmless record {n}\n" for n in range(60)) + CHILD_KILL + "\n")
    assert read_kills(watch) == [] and watch.lost
    watch.close()


def test_every_record_is_read_however_many_came_before_the_kill(tmp_path: Path) -> None:
    watch = logged_after_open(tmp_path, "".join(
        f"6,{n},1,-;harmless record {n}\n" for n in range(12_000)) + CHILD_KILL + "\n")
    assert [kill.pid for kill in read_kills(watch)] == [25387] and not watch.lost
    watch.close()


def test_printk_rate_limited_records_past_the_burst_mark_the_kmsg_reader_lost(
        tmp_path: Path) -> None:
    # Segfault reports share printk's rate limit with the kill records: past its burst, a
    # kill can be dropped from /dev/kmsg unseen.
    watch = logged_after_open(tmp_path, "".join(
        f"6,{n},1,-;python3[{n}]: segfault at 0 ip 0 sp 0 error 4\n" for n in range(PRINTK_BURST)))
    assert read_kills(watch) == [] and watch.lost
    watch.close()


def test_kills_of_another_uid_are_never_charged_to_this_run() -> None:
    neighbour = SeccompKill(pid=8, uid=10007, syscall=101, comm="x")
    assert attribute([neighbour], uid=10002) == ()


OURS = "5c5ac729630dd0005998362d3d226879e45525c294b93338345f15830ff5bd4a"
OTHER = "9" * 64
# As this host's kernel logged a container's memory-limit kill (the engine said OOMKilled
# false for it, then and a second later).
OOM_KILL = ("3,2417,34802523140,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),"
            f"cpuset={OURS},mems_allowed=0,oom_memcg=/sandgate/o/k/{OURS},"
            f"task_memcg=/sandgate/o/k/{OURS},task=python3,pid=23647,uid=10001")
FORK = f"6,2420,34802600000,-;cgroup: fork rejected by pids controller in /sandgate/o/k/{OURS}"


def test_the_kernel_says_which_container_had_an_oom_kill_or_a_refused_fork(
        tmp_path: Path) -> None:
    def said(name: str, text: str) -> KernelSaid:
        (tmp_path / name).mkdir()
        watch = logged_after_open(tmp_path / name, text)
        try:
            return kernel_said(watch, OURS)
        finally:
            watch.close()

    assert said("oom", OOM_KILL + "\n") == KernelSaid(oom_kill=True)
    assert said("fork", FORK + "\n") == KernelSaid(fork_rejected=True)
    assert said("both", f"{OOM_KILL}\n{FORK}\n") == KernelSaid(fork_rejected=True,
                                                                 oom_kill=True)
    assert said("others", OOM_KILL.replace(OURS, OTHER) + "\n"
                + FORK.replace(OURS, OTHER) + "\n") == KernelSaid()
    assert kernel_said(None, OURS) == KernelSaid()
