"""The security kit's pure parts: the container audit and the probes' expectations."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.adapters.runtime.audit import CHECKS, audit
from controller.profiles.load import load_profile
from controller.settings import SHIPPED_ROOT
from controller.tools.battery import contained, select
from controller.tools.probes import BATTERY, KILLED, printed, syscall_expectation

HARDENED: dict[str, Any] = {
    "Config": {"User": "10001:10001", "NetworkDisabled": True},
    "HostConfig": {"CapDrop": ["ALL"], "CapAdd": None, "Privileged": False,
                   "NetworkMode": "none", "Memory": 268435456, "MemorySwap": 268435456,
                   "NanoCpus": 1_000_000_000, "ReadonlyRootfs": True, "PidMode": "",
                   "IpcMode": "private", "UTSMode": "", "UsernsMode": "", "Devices": [],
                   "SecurityOpt": ["no-new-privileges:true", 'seccomp={"defaultAction": 1}'],
                   "PidsLimit": 64, "PortBindings": {}},
    "Mounts": [{"Source": "/var/lib/sandgate/runs/x/work", "Destination": "/workspace"}],
}
STANDARD = load_profile(SHIPPED_ROOT / "profiles" / "standard.yaml")


def weakened(path: str, value: object) -> dict[str, Any]:
    config = copy.deepcopy(HARDENED)
    section, key = path.split(".")
    config[section][key] = value
    return config


def test_a_hardened_container_passes_every_check() -> None:
    assert audit(HARDENED, network=False) == ()
    assert len(CHECKS) >= 15


def test_a_run_without_network_must_have_its_networking_disabled() -> None:
    """NetworkMode none alone leaves the engine's network sandbox and hook; a run granted a
    network is not held to it."""
    enabled = weakened("Config.NetworkDisabled", False)
    bridged = weakened("HostConfig.NetworkMode", "bridge")
    for config in (enabled, bridged):
        assert any(f.startswith("network none and disabled") for f in
                   audit(config, network=False))
    assert audit(bridged, network=True) == ()


@pytest.mark.parametrize(("path", "value", "check"), [
    ("HostConfig.CapAdd", ["SYS_ADMIN"], "5.3"),
    ("HostConfig.CapDrop", [], "5.3"),
    ("HostConfig.Privileged", True, "5.4"),
    ("HostConfig.NetworkMode", "host", "5.9"),
    ("HostConfig.MemorySwap", -1, "5.10"),
    ("HostConfig.ReadonlyRootfs", False, "5.12"),
    ("HostConfig.PidMode", "host", "5.15"),
    ("HostConfig.IpcMode", "host", "5.16"),
    ("HostConfig.Devices", [{"PathOnHost": "/dev/mem"}], "5.17"),
    ("HostConfig.SecurityOpt", ["no-new-privileges:true", "seccomp=unconfined"], "5.21"),
    ("HostConfig.SecurityOpt", ['seccomp={"x": 1}'], "5.25"),
    ("HostConfig.PidsLimit", 0, "5.28"),
    ("Config.User", "root", "4.1"),
    ("Mounts", [{"Source": "/var/run/docker.sock"}], "5.31"),
    ("Mounts", [{"Source": "/etc"}], "5.5"),
])
def test_each_weakening_fails_its_check(path: str, value: object, check: str) -> None:
    if path == "Mounts":
        config = copy.deepcopy(HARDENED)
        config["Mounts"] = value
    else:
        config = weakened(path, value)
    failed = audit(config, network=False)
    assert any(f.startswith(check) for f in failed), failed


def test_the_battery_is_large_and_named_uniquely() -> None:
    assert len(BATTERY) >= 40
    assert len({p.name for p in BATTERY}) == len(BATTERY)
    assert {p.category for p in BATTERY} >= {"kernel surface", "filesystem", "identity",
                                             "network", "resources", "outputs"}
    assert [p.name for p in select("identity")] == [p.name for p in BATTERY
                                                    if p.category == "identity"]


def test_syscall_expectations_follow_the_profile() -> None:
    assert syscall_expectation(STANDARD, "ptrace") == KILLED
    assert syscall_expectation(STANDARD, "clone3") == printed("errno 38")
    assert syscall_expectation(STANDARD, "io_uring_setup") == printed("errno 1")
    assert syscall_expectation(STANDARD, "read").kind == "breach"
    strict = load_profile(SHIPPED_ROOT / "profiles" / "strict.yaml")
    assert syscall_expectation(strict, "personality") == KILLED
    assert syscall_expectation(STANDARD, "personality") == printed("errno 1")


def test_a_breach_is_never_contained() -> None:
    from controller.core.models import Submission
    from tests.conftest import python

    sub = Submission(id="x", trace_id="t", request=python("x"), code_sha256="0",
                     stdout="result: errno none\n")
    assert not contained(printed("errno 1"), sub)
    assert contained(printed("errno none"), sub)
    assert not contained(syscall_expectation(STANDARD, "read"), sub)


def test_the_census_reports_a_denied_syscall_that_answered_otherwise() -> None:
    import json

    from controller.core.models import State, Submission
    from controller.tools.battery import census_drift
    from controller.tools.probes import CENSUS_PROBE, known_syscalls
    from tests.conftest import python

    expect = CENSUS_PROBE.expectation(STANDARD)
    numbers = {name: nr for nr, name in known_syscalls().items()}
    assert f"{numbers['io_uring_setup']}:1" in expect.tokens
    assert not any(t.startswith(f"{numbers['read']}:") for t in expect.tokens)
    assert str(numbers["ptrace"]) not in CENSUS_PROBE.code_for(STANDARD).split("[")[1]

    def census(answers: dict[int, int]) -> Submission:
        return Submission(id="c", trace_id="t", request=python("x"), code_sha256="0",
                          state=State.COMMITTED, stdout=f"result: {json.dumps(answers)}\n")

    clean = {numbers["io_uring_setup"]: 1, numbers["read"]: 14}
    assert census_drift(expect, census(clean)) == []
    drifted = {**clean, numbers["io_uring_setup"]: 22}  # answered by the kernel: allowed
    assert census_drift(expect, census(drifted)) == [f"{numbers['io_uring_setup']}:1!=22"]
    assert census_drift(expect, census({}).model_copy(update={"state": State.DENIED}))
