"""cgroup reading on v1 and v2 layouts, and refusal to read a cgroup that is not ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.adapters.runtime import cgroups
from controller.adapters.runtime.cgroups import CgroupReader, Sample


def fake_proc(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    real = Path.read_text

    def read_text(self: Path, encoding: str | None = None, errors: str | None = None) -> str:
        if str(self).startswith("/proc/") and str(self).endswith("/cgroup"):
            return text
        return real(self, encoding, errors)

    monkeypatch.setattr(Path, "read_text", read_text)


def test_v1_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for controller, files in {
        "memory": {"memory.max_usage_in_bytes": "1000\n",
                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"},
        "pids": {"pids.current": "7\n", "pids.events": "max 3\n"},
        "cpuacct": {"cpuacct.usage": "123456\n"},
    }.items():
        directory = tmp_path / controller / "docker" / "abc123"
        directory.mkdir(parents=True)
        for name, content in files.items():
            (directory / name).write_text(content)
    fake_proc(monkeypatch, "9:memory:/docker/abc123\n8:pids:/docker/abc123\n"
                           "4:cpu,cpuacct:/docker/abc123\n1:name=systemd:/docker/abc123\n")
    reader = CgroupReader.for_pid(1, owner="abc123", root=tmp_path)
    assert reader.sample() == Sample(memory_peak=1000, cpu_ns=123456, pids=7,
                                     pids_limit_events=3, oom_kills=1)


def test_v2_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "system.slice" / "docker-abc123.scope"
    directory.mkdir(parents=True)
    for name, content in {"cgroup.controllers": "cpu memory pids\n", "memory.peak": "2048\n",
                          "cpu.stat": "usage_usec 5\nuser_usec 3\n", "pids.peak": "4\n",
                          "pids.events": "max 0\n", "memory.events": "oom 0\noom_kill 0\n"
                          }.items():
        (directory / name).write_text(content)
    fake_proc(monkeypatch, "0::/system.slice/docker-abc123.scope\n")
    sample = CgroupReader.for_pid(1, owner="abc123", root=tmp_path).sample()
    assert sample == Sample(memory_peak=2048, cpu_ns=5000, pids=4, pids_limit_events=0,
                            oom_kills=0)


def test_a_reused_pid_in_another_cgroup_reads_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "pids.current").write_text("900\n")
    fake_proc(monkeypatch, "8:pids:/\n")
    assert CgroupReader.for_pid(1, owner="abc123", root=tmp_path).sample() == Sample()
    assert cgroups.Sample(pids=3).merge(Sample(pids=5, cpu_ns=1)) == Sample(pids=5, cpu_ns=1)


def test_a_run_parent_is_read_after_its_container_is_gone_then_removed(tmp_path: Path) -> None:
    from controller.adapters.runtime.cgroups import (
        final_sample,
        remove_owned_parents,
        remove_parent,
        run_parent,
    )

    parent = run_parent("../../etc", "s1-dry_run-ab12")
    assert parent == "sandgate/.._.._etc/s1-dry_run-ab12"
    for hierarchy, files in {"memory": {"memory.max_usage_in_bytes": "5000\n"},
                             "cpuacct": {"cpuacct.usage": "777\n"},
                             "pids": {"pids.peak": "3\n", "pids.current": "0\n"}}.items():
        directory = tmp_path / hierarchy / parent
        directory.mkdir(parents=True)
        for name, text in files.items():
            (directory / name).write_text(text)
    sample = final_sample(parent, tmp_path)
    assert (sample.memory_peak, sample.cpu_ns, sample.pids) == (5000, 777, 3)
    for hierarchy in ("memory", "cpuacct", "pids"):  # a cgroup directory rmdirs with its files
        for item in (tmp_path / hierarchy / parent).iterdir():
            item.unlink()
    (tmp_path / "pids" / parent / "busy").mkdir()  # one that cannot go yet: left, no error
    remove_parent(parent, tmp_path)
    assert not (tmp_path / "memory" / parent).exists()
    assert (tmp_path / "pids" / parent).exists()
    (tmp_path / "pids" / parent / "busy").rmdir()
    remove_owned_parents("../../etc", tmp_path)
    assert not (tmp_path / "pids" / parent).exists()
