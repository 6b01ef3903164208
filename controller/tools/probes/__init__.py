"""The escape-probe battery: small programs that try to break out, each with the exact
containment expected of a Sandgate sandbox.

A probe runs as an ordinary submission through the real pipeline. Most print one line,
``result: <token>`` (an errno, a count, a flag), and the expectation lists the tokens that
mean "contained". Others must never reach a real run: the dry run is killed by seccomp
(SIGSYS), or hits a named limit, or is refused by a named policy rule.

Syscall probes derive their expectation from the profile under test: a tripwire must kill,
any other syscall must fail with the errno the profile's rule (or default) returns, and a
syscall the profile allows outright is a breach by definition.

One module per category (``kernel``, ``network``, ``filesystem``, ``identity``,
``resources``, ``outputs``, ``binding``); ``probe`` holds what a probe and its expectation are.
``BATTERY`` is the whole battery, in the order it runs.
"""

from __future__ import annotations

from controller.tools.probes.binding import BINDING, NETWORKED
from controller.tools.probes.filesystem import FILESYSTEM
from controller.tools.probes.identity import IDENTITY
from controller.tools.probes.kernel import CENSUS_PROBE, KERNEL
from controller.tools.probes.network import EGRESS, SOCKETS
from controller.tools.probes.outputs import OUTPUTS
from controller.tools.probes.probe import (
    KILLED,
    Expect,
    ExpectKind,
    Probe,
    known_syscalls,
    printed,
    syscall_expectation,
)
from controller.tools.probes.resources import RESOURCES

BATTERY: tuple[Probe, ...] = (CENSUS_PROBE, *KERNEL, *SOCKETS, *EGRESS, *FILESYSTEM,
                              *IDENTITY, *RESOURCES, *OUTPUTS, *BINDING)

__all__ = ["BATTERY", "CENSUS_PROBE", "KILLED", "NETWORKED", "Expect", "ExpectKind", "Probe",
           "known_syscalls", "printed", "syscall_expectation"]
