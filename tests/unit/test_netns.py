"""A run's packets, counted by its own network namespace: parsing the kernel's counters,
refusing a stranger's namespace, and reading one from inside it."""

from __future__ import annotations

import os

import pytest

from controller.adapters.runtime.netns import HeldNetns, NetnsError, Traffic, parse

# /proc/net/dev as the kernel writes it (its rows are wider than this file's lines).
DEV = "\n".join([
    "Inter-|   Receive                                                |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast"
    "|bytes    packets errs drop fifo colls carrier compressed",
    "    lo:      86       2    0    0    0     0          0         0"
    "       86       2    0    0    0     0       0          0",
    "  eth0:    1000      7    0    0    0     0          0         0"
    "      500       3    0    0    0     0       0          0", ""])


def test_the_loopback_is_counted_once() -> None:
    assert parse(DEV) == Traffic(loopback_packets=2)


def test_a_namespace_without_a_loopback_is_an_error_not_zero() -> None:
    with pytest.raises(NetnsError, match="no loopback"):
        parse("\n".join(DEV.splitlines()[:2]))


@pytest.mark.parametrize("line", ["    lo: 86 2 0", "    lo: a b c d e f g h i j"])
def test_an_unreadable_line_is_an_error_not_zero(line: str) -> None:
    with pytest.raises((NetnsError, ValueError)):
        parse("\n".join([*DEV.splitlines()[:2], line]))


def test_a_process_outside_the_container_s_cgroup_is_not_held() -> None:
    with pytest.raises(NetnsError, match="not in the sandbox container's cgroup"):
        HeldNetns.hold(os.getpid(), owner="no-such-container-id")


def test_the_counters_are_read_from_inside_the_held_namespace() -> None:
    held = HeldNetns(os.open("/proc/self/ns/net", os.O_RDONLY))
    try:
        traffic, why = held.counted()
        if os.geteuid() != 0:  # entering a namespace takes CAP_SYS_ADMIN: unknown, and said
            assert traffic is None and why is not None and "Operation not permitted" in why
        else:
            assert traffic is not None and why is None
            with open("/proc/thread-self/net/dev") as dev:
                assert traffic == parse(dev.read())
    finally:
        held.close()
    assert held.counted()[0] is None  # closed: nothing more is read
