"""Profile lint for the platform team: what a profile allows that it should not.

``lint_profile`` loads the profile as the controller would (schema, pyseccomp compilation,
a default that denies) and then flags, each with its reason: dangerous syscalls allowed,
``clone`` or ``socket`` allowed without their argument filters, 32-bit and x32 ABIs, and
limits out of a sane range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.core.profile import Profile
from controller.errors import ProfileError
from controller.profiles.load import load_profile

DANGEROUS: dict[str, str] = {
    "ptrace": "reads and writes other processes' memory and registers",
    "process_vm_readv": "reads another process's memory",
    "process_vm_writev": "writes another process's memory",
    "mount": "changes the filesystem namespace",
    "umount2": "changes the filesystem namespace",
    "pivot_root": "changes the root filesystem",
    "move_mount": "new mount API: changes mounts",
    "open_tree": "new mount API: clones mounts",
    "fsopen": "new mount API: creates filesystems",
    "fsmount": "new mount API: mounts filesystems",
    "fsconfig": "new mount API",
    "fspick": "new mount API",
    "mount_setattr": "changes mount attributes",
    "unshare": "creates namespaces (user namespaces give capabilities inside them)",
    "setns": "joins other namespaces",
    "clone3": "takes namespace flags in memory, where seccomp cannot inspect them",
    "bpf": "loads programs into the kernel",
    "perf_event_open": "kernel performance interface, a frequent exploit vector",
    "userfaultfd": "a frequent building block of kernel exploits",
    "io_uring_setup": "io_uring bypasses seccomp for the operations it submits",
    "io_uring_enter": "io_uring bypasses seccomp for the operations it submits",
    "io_uring_register": "io_uring bypasses seccomp for the operations it submits",
    "keyctl": "the kernel keyring is not namespaced",
    "add_key": "the kernel keyring is not namespaced",
    "request_key": "the kernel keyring is not namespaced",
    "init_module": "loads kernel modules",
    "finit_module": "loads kernel modules",
    "delete_module": "unloads kernel modules",
    "kexec_load": "replaces the running kernel",
    "kexec_file_load": "replaces the running kernel",
    "reboot": "reboots or halts the host",
    "open_by_handle_at": "opens host files by handle (the 'shocker' escape)",
    "name_to_handle_at": "the other half of open_by_handle_at",
    "swapon": "changes host swap",
    "swapoff": "changes host swap",
    "acct": "host process accounting",
    "settimeofday": "sets the host clock",
    "clock_settime": "sets the host clock",
    "clock_adjtime": "adjusts the host clock",
    "adjtimex": "adjusts the host clock",
    "iopl": "raw I/O port access",
    "ioperm": "raw I/O port access",
    "personality": "changes the execution domain (address-space layout and more)",
    "quotactl": "filesystem quotas of the host",
    "lookup_dcookie": "kernel profiling interface",
    "kcmp": "compares kernel objects of other processes",
    "pidfd_getfd": "steals file descriptors from other processes",
    "syslog": "reads the kernel log",
    "uselib": "obsolete, exploit-prone",
    "vhangup": "hangs up terminals",
    "chroot": "changes the root directory",
}
ARGUMENT_FILTERED = {
    "clone": "clone must filter its flags (argument 0) so that no namespace flag passes",
    "socket": "socket must filter its family (argument 0): raw, packet, AF_ALG, AF_VSOCK …",
}
FORBIDDEN_ARCHES = {"SCMP_ARCH_X86": "the 32-bit ABI (int 0x80) doubles the attack surface",
                    "SCMP_ARCH_X32": "the x32 ABI doubles the attack surface"}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" fails the lint; "warning" does not
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def lint_profile(path: Path) -> list[Finding]:
    """Every finding for one profile YAML; an unloadable profile is one error."""
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        return [Finding("error", str(path), str(exc))]
    return lint_loaded(profile, path)


def lint_loaded(profile: Profile, path: Path) -> list[Finding]:
    """Every finding for a profile already loaded from ``path``."""
    where = f"{path} ({profile.seccomp_file})"
    return _syscalls(profile, where) + _arches(profile, where) + _limits(profile, str(path))


def _allows(profile: Profile) -> list[dict[str, Any]]:
    rules = profile.seccomp.get("syscalls", [])
    assert isinstance(rules, list)
    return [rule for rule in rules if rule.get("action") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")]


def _syscalls(profile: Profile, where: str) -> list[Finding]:
    findings = []
    for rule in _allows(profile):
        for name in rule.get("names", []):
            if name in DANGEROUS:
                findings.append(Finding("error", where, f"allows {name}: {DANGEROUS[name]}"))
            if name in ARGUMENT_FILTERED and not rule.get("args"):
                findings.append(Finding("error", where,
                                        f"allows {name} for any argument: "
                                        f"{ARGUMENT_FILTERED[name]}"))
    return findings


def _arches(profile: Profile, where: str) -> list[Finding]:
    arches = profile.seccomp.get("architectures") or []
    assert isinstance(arches, list)
    findings = [Finding("error", where, f"lists {arch}: {why}")
                for arch, why in FORBIDDEN_ARCHES.items() if arch in arches]
    if not arches:
        findings.append(Finding("warning", where, "no architectures listed: the engine's "
                                                  "defaults may include 32-bit ABIs"))
    return findings


def _limits(profile: Profile, where: str) -> list[Finding]:
    limits = profile.limits
    checks = [
        (limits.pids > 1024, f"pids {limits.pids} is high for one sandbox (fork bombs)"),
        (limits.nofile > 4096, f"nofile {limits.nofile} is high for one sandbox"),
        (limits.tmpfs_bytes > limits.memory_bytes,
         "tmpfs_bytes exceeds memory_bytes: /tmp and /dev/shm are memory, charged to the "
         "sandbox"),
        (limits.tmpfs_inodes > 1_000_000, "tmpfs_inodes is very high"),
        (limits.workspace_bytes + 2 * limits.tmpfs_bytes > limits.memory_bytes,
         "workspace_bytes + 2 * tmpfs_bytes exceed memory_bytes: /workspace, /tmp and "
         "/dev/shm are tmpfs, and what the sandbox writes there is charged to its memory, so "
         "it meets the OOM killer before a full filesystem"),
        (limits.output_bytes > 64 << 20, "output_bytes over 64 MiB is held in memory"),
        (limits.wall_time_s > 600, "wall_time_s over 10 minutes blocks a worker"),
        (profile.network, "network is on: the bounded run gets a bridge network"),
    ]
    return [Finding("warning", where, message) for bad, message in checks if bad]
