"""Filesystem: writes outside the workspace, device files, setuid binaries, runtime sockets,
leaked descriptors and host paths in the mount table."""

from __future__ import annotations

from controller.tools.probes.probe import Probe, attempt, printed

FILESYSTEM = [
    attempt("write-root", "filesystem", "open('/probe', 'w')", printed("errno 30")),
    attempt("write-usr", "filesystem", "open('/usr/probe', 'w')", printed("errno 30")),
    attempt("write-etc-passwd", "filesystem", "open('/etc/passwd', 'a')",
            printed("errno 13", "errno 30")),
    attempt("write-proc-sys", "filesystem",
            "open('/proc/sys/kernel/hostname', 'w').write('x')",
            printed("errno 30", "errno 13")),
    attempt("write-sysrq-trigger", "filesystem",
            "open('/proc/sysrq-trigger', 'w').write('h')",
            printed("errno 2", "errno 13", "errno 30")),
    attempt("write-sys", "filesystem", "open('/sys/kernel/uevent_helper', 'w').write('x')",
            printed("errno 30", "errno 13", "errno 2")),
    attempt("cgroup-release-agent", "filesystem",
            "open('/sys/fs/cgroup/release_agent', 'w').write('/x')",
            printed("errno 13", "errno 30", "errno 2")),
    attempt("read-proc-kcore", "filesystem", "len(open('/proc/kcore', 'rb').read(16))",
            printed("errno 2", "errno 13", "0"), notes="absent, or masked to /dev/null"),
    attempt("read-dev-mem", "filesystem", "open('/dev/mem', 'rb')",
            printed("errno 2", "errno 13")),
    attempt("mknod-char-device", "filesystem",
            "os.mknod('/tmp/null', 0o600 | 0o020000, os.makedev(1, 3))", printed("errno 1")),
    attempt("exec-from-tmp", "filesystem",
            "(open('/tmp/s.sh', 'w').write('#!/bin/sh\\n'), os.chmod('/tmp/s.sh', 0o755), "
            "os.execv('/tmp/s.sh', ['/tmp/s.sh']))", printed("errno 13"),
            notes="/tmp is noexec"),
    attempt("setuid-binaries-present", "filesystem",
            "sum(1 for d, _, fs in os.walk('/') if not d.startswith(('/proc', '/sys')) "
            "for f in fs if os.path.isfile(os.path.join(d, f)) and not "
            "os.path.islink(os.path.join(d, f)) and "
            "os.stat(os.path.join(d, f)).st_mode & 0o6000)", printed("0")),
    attempt("runtime-sockets-present", "filesystem",
            "sum(1 for d, _, fs in os.walk('/') if not d.startswith(('/proc', '/sys')) "
            "for f in fs if f in ('docker.sock', 'containerd.sock', 'crio.sock'))",
            printed("0")),
    Probe("leaked-file-descriptors", "filesystem", expect=printed("[]"),
          notes="the runc CVE-2024-21626 class: no inherited descriptor to a host path",
          code="""import os
leaked = []
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        continue  # the descriptor listdir itself used, already closed
    if int(fd) > 2 and not target.startswith(("pipe:", "socket:", "anon_inode:", "/dev/")):
        leaked.append(target)
print("result:", sorted(leaked), flush=True)
"""),
    attempt("cwd-is-the-workspace", "filesystem", "os.getcwd()", printed("/workspace")),
    Probe("mountinfo-host-paths", "filesystem", expect=printed("[]"),
          notes="/workspace and /sandbox are tmpfs roots, and no mount shows a host path but "
                "the engine's own /etc/hosts, /etc/hostname, /etc/resolv.conf (docs/security.md)",
          code="""PSEUDO = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue"}
ENGINE = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
shown = []
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    root, point, fstype = fields[3], fields[4], fields[fields.index("-") + 1]
    if point in ("/workspace", "/sandbox"):
        if (fstype, root) != ("tmpfs", "/"):
            shown.append(f"{point} <- {fstype} {root}")
    elif root != "/" and fstype not in PSEUDO and point not in ENGINE and (
            (fstype, root) != ("tmpfs", "/null")):  # the engine's masks of /proc files
        shown.append(f"{point} <- {fstype} {root}")
print("result:", sorted(shown), flush=True)
"""),
]
