"""Container configuration audit: the CIS Docker Benchmark's container-runtime items that
apply to a sandbox, checked against what the engine *reports* (``docker inspect``), not
against the arguments we passed. A container that fails is never started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SENSITIVE_SOURCES = ("/", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sys", "/usr",
                     "/var/run", "/run", "/var/lib/docker")
SOCKETS = ("docker.sock", "containerd.sock", "crio.sock", "podman.sock")

Check = Callable[[dict[str, Any]], bool]


def _host(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config.get("HostConfig") or {})


def _mounts_ok(config: dict[str, Any]) -> bool:
    for mount in config.get("Mounts") or []:
        source = str(mount.get("Source", "")).rstrip("/") or "/"
        if source in SENSITIVE_SOURCES or source.endswith(SOCKETS):
            return False
    return True


def _seccomp_confined(config: dict[str, Any]) -> bool:
    options = [str(o) for o in _host(config).get("SecurityOpt") or []]
    return any(o.startswith("seccomp=") for o in options) and not any(
        o.replace(":", "=") == "seccomp=unconfined" for o in options)


CHECKS: dict[str, tuple[str, Check]] = {
    "5.3 all capabilities dropped": (
        "CapDrop must be ALL and CapAdd empty",
        lambda c: [x.upper() for x in _host(c).get("CapDrop") or []] in (["ALL"], ["CAP_ALL"])
        and not _host(c).get("CapAdd")),
    "5.4 not privileged": ("Privileged must be false", lambda c: not _host(c).get("Privileged")),
    "5.5 no sensitive host mounts": ("no mount of /, /etc, /proc, /sys, a runtime socket …",
                                     _mounts_ok),
    "5.9 host network not shared": ("NetworkMode must not be host",
                                    lambda c: _host(c).get("NetworkMode") != "host"),
    "5.10 memory limited": ("Memory > 0 and MemorySwap == Memory",
                            lambda c: (_host(c).get("Memory") or 0) > 0
                            and _host(c).get("MemorySwap") == _host(c).get("Memory")),
    "5.11 CPU limited": ("NanoCpus (or a CPU quota) must be set",
                         lambda c: (_host(c).get("NanoCpus") or 0) > 0
                         or (_host(c).get("CpuQuota") or 0) > 0),
    "5.12 read-only root": ("ReadonlyRootfs must be true",
                            lambda c: bool(_host(c).get("ReadonlyRootfs"))),
    "5.15 host PID namespace not shared": ("PidMode must not be host",
                                           lambda c: _host(c).get("PidMode") != "host"),
    "5.16 host IPC namespace not shared": ("IpcMode must not be host",
                                           lambda c: _host(c).get("IpcMode") != "host"),
    "5.17 no host devices": ("Devices must be empty", lambda c: not _host(c).get("Devices")),
    "5.20 host UTS namespace not shared": ("UTSMode must not be host",
                                           lambda c: _host(c).get("UTSMode") != "host"),
    "5.21 seccomp confined": ("a seccomp profile must be set, never unconfined",
                              _seccomp_confined),
    "5.25 no new privileges": ("SecurityOpt must hold no-new-privileges",
                               lambda c: any(str(o).startswith("no-new-privileges")
                                             for o in _host(c).get("SecurityOpt") or [])),
    "5.28 pids limited": ("PidsLimit must be > 0",
                          lambda c: (_host(c).get("PidsLimit") or 0) > 0),
    "5.30 host user namespace not shared": ("UsernsMode must not be host",
                                            lambda c: _host(c).get("UsernsMode") != "host"),
    "5.31 no runtime socket mounted": ("no docker/containerd socket in the mounts",
                                       lambda c: not any(str(m.get("Source", "")).endswith(
                                           SOCKETS) for m in c.get("Mounts") or [])),
    "4.1 not root": ("Config.User must name a non-root user",
                     lambda c: str((c.get("Config") or {}).get("User") or "root").split(":")[0]
                     not in ("", "0", "root")),
    "5.7 no published ports": ("PortBindings must be empty",
                               lambda c: not _host(c).get("PortBindings")),
}


NO_NETWORK = ("network none and disabled",
              "NetworkMode must be none and Config.NetworkDisabled true (a run without network)")


def _no_network(config: dict[str, Any]) -> bool:
    return (_host(config).get("NetworkMode") == "none"
            and bool((config.get("Config") or {}).get("NetworkDisabled")))


def audit(config: dict[str, Any], *, network: bool) -> tuple[str, ...]:
    """The failed checks of one container's inspect document, each with what it requires;
    ``network``: whether its run was granted one (else it must have none at all)."""
    failed = [f"{name}: {requirement}" for name, (requirement, check) in CHECKS.items()
              if not check(config)]
    if not network and not _no_network(config):
        failed.append(f"{NO_NETWORK[0]}: {NO_NETWORK[1]}")
    return tuple(failed)
