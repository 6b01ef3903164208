"""The escape-probe battery: small programs that try to break out, each with the exact
containment expected of a Sandgate sandbox.

A probe runs as an ordinary submission through the real pipeline. Most print one line,
``result: <token>`` (an errno, a count, a flag), and the expectation lists the tokens that
mean "contained". Others must never reach a real run: the dry run is killed by seccomp
(SIGSYS), or hits a named limit, or is refused by a named policy rule.

Syscall probes derive their expectation from the profile under test: a tripwire must kill,
any other syscall must fail with the errno the profile's rule (or default) returns, and a
syscall the profile allows outright is a breach by definition.
"""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from controller.core.models import Language, SubmittedFile
from controller.core.profile import Profile

SYSCALL = """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall({nr}, {args})
print("result: errno", ctypes.get_errno() if r == -1 else "none", flush=True)
"""
ATTEMPT = """import errno, os, socket
def attempt(fn):
    try:
        value = fn()
    except OSError as exc:
        return f"errno {{exc.errno}}"
    return "ok" if value is None else str(value)
print("result:", attempt(lambda: {expr}), flush=True)
"""


@dataclass(frozen=True)
class Expect:
    """What containment looks like. ``kind``: printed | killed | limit | rule."""

    kind: str
    tokens: frozenset[str] = frozenset()  # printed: accepted ``result:`` values
    value: str = ""  # limit name, or policy rule id

    def describe(self) -> str:
        if self.kind == "printed":
            return " or ".join(sorted(self.tokens))
        if self.kind == "census":
            return f"{len(self.tokens)} denied syscalls answer their errno"
        if self.kind == "state":
            return f"ends {self.value}"
        if self.kind == "killed":
            return "dry run killed by seccomp (SIGSYS), denied"
        return f"denied: {self.kind} {self.value}"


def printed(*tokens: str) -> Expect:
    return Expect("printed", frozenset(tokens))


KILLED = Expect("killed")


@dataclass(frozen=True)
class Probe:
    name: str
    category: str
    code: str
    expect: Expect | None = None  # None: derived from the profile (syscall probes)
    syscall: str | None = None
    language: Language = Language.PYTHON
    notes: str = ""
    render: Callable[[Profile], str] | None = None  # code that depends on the profile
    census: bool = False
    files: tuple[SubmittedFile, ...] = ()  # placed in the workspace, as an agent's would be

    def code_for(self, profile: Profile) -> str:
        return self.render(profile) if self.render is not None else self.code

    def expectation(self, profile: Profile) -> Expect:
        if self.census:
            return census_expectation(profile)
        if self.expect is not None:
            return self.expect
        assert self.syscall is not None
        return syscall_expectation(profile, self.syscall)


def syscall_expectation(profile: Profile, name: str) -> Expect:
    """What the profile says must happen when ``name`` is called (with unmatched arguments)."""
    if name in profile.tripwires:
        return KILLED
    rules = profile.seccomp.get("syscalls", [])
    assert isinstance(rules, list)
    for rule in rules:
        if name not in rule.get("names", []):
            continue
        action = rule.get("action")
        if action == "SCMP_ACT_ALLOW" and not rule.get("args"):
            return Expect("breach", value=f"the profile allows {name}")
        if action == "SCMP_ACT_ERRNO":
            return printed(f"errno {rule.get('errnoRet', 1)}")
        if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"):
            return KILLED
    return printed(f"errno {profile.seccomp.get('defaultErrnoRet', 1)}")


def _syscall(name: str, nr: int, *args: int, category: str = "kernel surface",
             notes: str = "") -> Probe:
    rendered = ", ".join(f"ctypes.c_long({a})" for a in args) or "0"
    return Probe(name=f"syscall-{name}", category=category, syscall=name, notes=notes,
                 code=SYSCALL.format(nr=nr, args=rendered))


def _tar(*members: tuple[str, bytes | str]) -> bytes:
    """A tar archive in memory: bytes make a file member, a str a symlink to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"x")
    return buffer.getvalue()


def _archive_file(path: str, data: bytes) -> SubmittedFile:
    return SubmittedFile(path=path, content=base64.b64encode(data).decode(), encoding="base64")


def _attempt(name: str, category: str, expr: str, expect: Expect, notes: str = "") -> Probe:
    return Probe(name=name, category=category, code=ATTEMPT.format(expr=expr), expect=expect,
                 notes=notes)


# Fills each writable mount (``only``: just these) in 1 MiB writes until it refuses, and
# says whether it was full within the profile's cap for it (a full host disk is ENOSPC too).
FILL = """import errno, os
caps, only, filled = {caps!r}, {only!r}, []
for line in open("/proc/self/mountinfo"):
    point = line.split()[4]
    if only is not None and point not in only:
        continue
    target = os.path.join(point, ".sandgate-fill")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        continue  # not writable by this user
    outcome, written, chunk = "unbounded", 0, b"0" * (1 << 20)
    try:
        for _ in range(1 << 20):  # up to 1 TiB
            written += os.write(fd, chunk)
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        os.close(fd)
        os.unlink(target)  # what is charged to the sandbox's memory goes before the next
    cap = caps.get(point)
    within = "within the cap" if cap is not None and written <= cap else f"after {{written}} B"
    said = f"{{outcome}} {{within}}"
    filled.append(said if only is not None else f"{{point}}:{{said}}")
print("result:", " ".join(sorted(filled)), flush=True)
"""
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17
NAMESPACES = {"mount": CLONE_NEWNS, "uts": 0x04000000, "ipc": 0x08000000, "net": CLONE_NEWNET,
              "pid": 0x20000000, "cgroup": 0x02000000, "time": 0x00000080}

KERNEL = [
    _syscall("ptrace", 101), _syscall("process_vm_readv", 310),
    _syscall("process_vm_writev", 311), _syscall("mount", 165), _syscall("umount2", 166),
    _syscall("pivot_root", 155), _syscall("setns", 308), _syscall("bpf", 321),
    _syscall("keyctl", 250), _syscall("add_key", 248), _syscall("request_key", 249),
    _syscall("init_module", 175), _syscall("finit_module", 313),
    _syscall("delete_module", 176), _syscall("kexec_load", 246),
    _syscall("kexec_file_load", 320), _syscall("reboot", 169),
    _syscall("open_by_handle_at", 304), _syscall("swapon", 167), _syscall("acct", 163),
    _syscall("fsopen", 430), _syscall("open_tree", 428),
    _syscall("io_uring_setup", 425), _syscall("perf_event_open", 298),
    _syscall("userfaultfd", 323), _syscall("personality", 135, 0xFFFFFFFF),
    _syscall("clock_settime", 227), _syscall("settimeofday", 164), _syscall("iopl", 172),
    _syscall("ioperm", 173), _syscall("kcmp", 312), _syscall("pidfd_getfd", 438),
    _syscall("syslog", 103), _syscall("name_to_handle_at", 303), _syscall("clone3", 435),
    _syscall("sethostname", 170), _syscall("setuid", 105),
    _syscall("prctl", 157, 22, 2, 0,
             notes="PR_SET_SECCOMP: a filter of the sandbox's own could log a flood of audit "
                   "records to bury a child's tripwire; every profile refuses it"),
    Probe("prctl-set-seccomp-high-bits", "kernel surface", syscall="prctl",
          code=SYSCALL.format(nr=157, args=f"ctypes.c_long({22 | 1 << 32}), ctypes.c_long(2), "
                                         "ctypes.c_long(0)"),
          notes="the kernel reads prctl's option as a 32-bit int: 22 with high bits set is "
                "PR_SET_SECCOMP all the same, and must be refused all the same"),
    _syscall("seccomp", 317, 1, 0, 0,
             notes="SECCOMP_SET_MODE_FILTER by the seccomp syscall: refused likewise"),
    Probe("unshare-user-namespace", "kernel surface", syscall="unshare",
          code=SYSCALL.format(nr=272, args=f"ctypes.c_long({CLONE_NEWUSER})")),
    *(Probe(f"unshare-{name}-namespace", "kernel surface", syscall="unshare",
            code=SYSCALL.format(nr=272, args=f"ctypes.c_long({flag})"))
      for name, flag in NAMESPACES.items()),
    Probe("clone-new-user-namespace", "kernel surface",
          code=SYSCALL.format(nr=56, args=f"ctypes.c_long({CLONE_NEWUSER | SIGCHLD}), "
                                          "ctypes.c_long(0)"),
          expect=printed("errno 1"), notes="clone is allowed only without namespace flags"),
    Probe("clone-new-mount-and-net", "kernel surface",
          code=SYSCALL.format(nr=56, args=f"ctypes.c_long({CLONE_NEWNS | CLONE_NEWNET | SIGCHLD})"
                                          ", ctypes.c_long(0)"),
          expect=printed("errno 1")),
    Probe("int-0x80-32-bit-abi", "kernel surface", expect=KILLED,
          notes="the 32-bit ABI is not in the filter's architectures: the kernel kills",
          code="""import ctypes, mmap
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (getpid); int 0x80; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("result: pid", call(), flush=True)
"""),
]

SOCKETS = [
    _attempt("socket-packet", "network", "socket.socket(17, socket.SOCK_RAW)",
             printed("errno 1")),
    _attempt("socket-raw-icmp", "network",
             "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
             printed("errno 1")),
    _attempt("socket-af-alg", "network", "socket.socket(38, socket.SOCK_SEQPACKET)",
             printed("errno 1")),
    _attempt("socket-af-vsock", "network", "socket.socket(40, socket.SOCK_STREAM)",
             printed("errno 1")),
    _attempt("socket-netlink", "network", "socket.socket(16, socket.SOCK_RAW, 0)",
             printed("errno 1")),
]
# No packet leaves a sandbox without network: these fail inside the container's own stack.
EGRESS = [
    _attempt("egress-metadata-address", "network",
             "socket.create_connection(('169.254.169.254', 80), timeout=3)",
             printed("errno 101", "errno 1")),
    _attempt("egress-bridge-gateway-docker-api", "network",
             "socket.create_connection(('172.17.0.1', 2375), timeout=3)",
             printed("errno 101", "errno 1")),
    _attempt("egress-bridge-gateway-docker-tls-api", "network",
             "socket.create_connection(('172.17.0.1', 2376), timeout=3)",
             printed("errno 101", "errno 1")),
    _attempt("egress-udp", "network",
             "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('172.17.0.1', 53))",
             printed("errno 101", "errno 1")),
    _attempt("egress-ipv6", "network",
             "socket.create_connection(('fd00::1', 80), timeout=3)",
             printed("errno 101", "errno 99", "errno 97", "errno 1")),
    _attempt("egress-controller-api-port", "network",
             "socket.create_connection(('127.0.0.1', 8080), timeout=3)",
             printed("errno 111", "errno 1"), notes="loopback is the sandbox's own"),
    _attempt("dns-resolution", "network",
             "len(socket.getaddrinfo('example.com', 80))",
             printed("errno -2", "errno -3", "errno -5", "errno 101"),
             notes="socket.gaierror carries the resolver's negative code"),
]

FILESYSTEM = [
    _attempt("write-root", "filesystem", "open('/probe', 'w')", printed("errno 30")),
    _attempt("write-usr", "filesystem", "open('/usr/probe', 'w')", printed("errno 30")),
    _attempt("write-etc-passwd", "filesystem", "open('/etc/passwd', 'a')",
             printed("errno 13", "errno 30")),
    _attempt("write-proc-sys", "filesystem",
             "open('/proc/sys/kernel/hostname', 'w').write('x')",
             printed("errno 30", "errno 13")),
    _attempt("write-sysrq-trigger", "filesystem",
             "open('/proc/sysrq-trigger', 'w').write('h')",
             printed("errno 2", "errno 13", "errno 30")),
    _attempt("write-sys", "filesystem", "open('/sys/kernel/uevent_helper', 'w').write('x')",
             printed("errno 30", "errno 13", "errno 2")),
    _attempt("cgroup-release-agent", "filesystem",
             "open('/sys/fs/cgroup/release_agent', 'w').write('/x')",
             printed("errno 13", "errno 30", "errno 2")),
    _attempt("read-proc-kcore", "filesystem", "len(open('/proc/kcore', 'rb').read(16))",
             printed("errno 2", "errno 13", "0"), notes="absent, or masked to /dev/null"),
    _attempt("read-dev-mem", "filesystem", "open('/dev/mem', 'rb')",
             printed("errno 2", "errno 13")),
    _attempt("mknod-char-device", "filesystem",
             "os.mknod('/tmp/null', 0o600 | 0o020000, os.makedev(1, 3))", printed("errno 1")),
    _attempt("exec-from-tmp", "filesystem",
             "(open('/tmp/s.sh', 'w').write('#!/bin/sh\\n'), os.chmod('/tmp/s.sh', 0o755), "
             "os.execv('/tmp/s.sh', ['/tmp/s.sh']))", printed("errno 13"),
             notes="/tmp is noexec"),
    _attempt("setuid-binaries-present", "filesystem",
             "sum(1 for d, _, fs in os.walk('/') if not d.startswith(('/proc', '/sys')) "
             "for f in fs if os.path.isfile(os.path.join(d, f)) and not "
             "os.path.islink(os.path.join(d, f)) and "
             "os.stat(os.path.join(d, f)).st_mode & 0o6000)", printed("0")),
    _attempt("runtime-sockets-present", "filesystem",
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
    _attempt("cwd-is-the-workspace", "filesystem", "os.getcwd()", printed("/workspace")),
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

IDENTITY = [
    _attempt("capabilities-effective", "identity",
             "[l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]",
             printed("0000000000000000")),
    _attempt("capabilities-bounding", "identity",
             "[l.split()[1] for l in open('/proc/self/status') if l.startswith('CapBnd')][0]",
             printed("0000000000000000")),
    _attempt("no-new-privs", "identity",
             "[l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0]",
             printed("1")),
    _attempt("seccomp-filter-mode", "identity",
             "[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]",
             printed("2")),
    _attempt("not-root", "identity", "os.getuid() != 0 and os.geteuid() != 0", printed("True")),
    _attempt("no-controller-secrets-in-env", "identity",
             "sorted(k for k in os.environ if k.startswith(('SANDGATE', 'DOCKER', 'AWS')) or "
             "'KEY' in k or 'TOKEN' in k or 'SECRET' in k)", printed("[]")),
    Probe("no-controller-secrets-in-files", "identity", expect=printed("[]"),
          notes="no private key and no SANDGATE_ setting in any readable file of the sandbox",
          code="""import os
# Built at run time, so that this very file does not match.
needles = ("PRIVATE" + " KEY-----").encode(), ("SANDGATE" + "_").encode()
found = []
for directory, subdirs, files in os.walk("/"):
    if directory.startswith(("/proc", "/sys", "/dev")):
        subdirs[:] = []
        continue
    for name in files:
        path = os.path.join(directory, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
        except OSError:
            continue  # unreadable by the sandbox user: not a leak to it
        if any(needle in head for needle in needles):
            found.append(path)
print("result:", sorted(found), flush=True)
"""),
    _attempt("no-secrets-in-other-environ", "identity",
             "sum(1 for p in os.listdir('/proc') if p.isdigit() and "
             "b'SANDGATE' in open(f'/proc/{p}/environ', 'rb').read())", printed("0")),
]

RESOURCES = [
    Probe("fork-bomb", "resources", "import os\nwhile True:\n    os.fork()\n",
          Expect("limit", value="pids")),
    Probe("thread-bomb", "resources",
          "import threading, time\nwhile True:\n"
          "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
          Expect("limit", value="pids")),
    Probe("memory-bomb", "resources",
          "x = []\nwhile True:\n    x.append(bytearray(10**7))\n", Expect("limit", value="memory")),
    Probe("oom-of-a-child-only", "resources",
          "import subprocess, sys\n"
          "r = subprocess.run([sys.executable, '-c', 'x = []\\nwhile True:\\n"
          "    x.append(bytearray(10**7))'])\nprint('result: child', r.returncode)\n",
          Expect("limit", value="memory"),
          notes="the parent survives and exits 0; the OOM kill still counts"),
    Probe("cpu-spin", "resources", "while True:\n    pass\n", Expect("limit", value="wall_time")),
    Probe("sleep-ignoring-sigterm", "resources",
          "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)\n",
          Expect("limit", value="wall_time")),
    Probe("stdout-flood", "resources", "while True:\n    print('x' * 1000)\n",
          Expect("limit", value="output")),
    Probe("huge-single-line", "resources",
          "import sys\nsys.stdout.write('y' * 50_000_000)\n", Expect("limit", value="output")),
    Probe("stderr-flood", "resources", "yes 1>&2", Expect("limit", value="output"),
          language=Language.SH),
    _attempt("fd-exhaustion", "resources",
             "[open('/dev/null') for _ in range(100000)]", printed("errno 24")),
    _attempt("tmp-disk-fill", "resources",
             "(lambda f: [f.write(b'0' * (1 << 20)) and f.flush() for _ in range(4096)])"
             "(open('/tmp/fill', 'wb', buffering=0))", printed("errno 28")),
    _attempt("tmp-inode-exhaustion", "resources",
             "[open(f'/tmp/i{n}', 'w').close() for n in range(1_000_000)]", printed("errno 28")),
    # A single file meets RLIMIT_FSIZE (EFBIG) or the tmpfs's end (ENOSPC): both within the cap.
    Probe("workspace-disk-fill", "resources",
          expect=printed("ENOSPC within the cap", "EFBIG within the cap"),
          code="", render=lambda profile: FILL.format(caps={"/workspace": (
              profile.limits.workspace_bytes)}, only=["/workspace"]),
          notes="the workspace is a tmpfs of workspace_bytes: full inside, never the host's disk"
          ),
    Probe("disk-fill-every-writable-path", "resources",
          expect=printed(*(f"/dev/shm:ENOSPC within the cap /tmp:ENOSPC within the cap "
                           f"/workspace:{end} within the cap" for end in ("ENOSPC", "EFBIG"))),
          code="", render=lambda profile: FILL.format(caps={
              "/workspace": profile.limits.workspace_bytes, "/tmp": profile.limits.tmpfs_bytes,
              "/dev/shm": profile.limits.tmpfs_bytes}, only=None),
          notes="every mount the sandbox user can create a file on, filled in turn: each must "
                "end full within its profile cap, and no other may be writable"),
    Probe("workspace-100k-tiny-files", "resources", expect=printed("errno 28"),
          notes="the workspace tmpfs has workspace_files inodes: the 100,000th file never lands",
          code="""import os
made, outcome = [], "made 100000 files"
try:
    for n in range(100_000):
        name = f"t{n}"
        open(name, "w").close()
        made.append(name)
except OSError as exc:
    outcome = f"errno {exc.errno}"
for name in made:
    os.remove(name)
print("result:", outcome, flush=True)
"""),
]

OUTPUTS = [
    Probe("symlink-out-of-workspace", "outputs", "import os\nos.symlink('/etc/shadow', 'x')\n",
          Expect("rule", value="run.deny-escaping-symlink")),
    Probe("symlink-chain-out-of-workspace", "outputs",
          "import os\nos.symlink('.', 's')\nos.symlink('s/s/s/../../..', 't')\n",
          Expect("rule", value="run.deny-escaping-symlink")),
    Probe("setuid-file-in-workspace", "outputs",
          "import os\nopen('tool', 'w').write('x')\nos.chmod('tool', 0o4755)\n",
          Expect("rule", value="run.deny-setuid")),
    Probe("deep-directory-nesting", "outputs", expect=Expect("state", value="denied"),
          notes="paths past 3,000 bytes cannot be walked safely: denied at the dry run",
          code="import os\nfor _ in range(2500):\n    os.mkdir('d')\n    os.chdir('d')\n"),
    _attempt("hardlink-out-of-workspace", "outputs", "os.link('/etc/passwd', 'passwd')",
             printed("errno 1", "errno 18"),
             notes="protected hardlinks (EPERM) or a cross-mount link (EXDEV)"),
    _attempt("fifo-in-workspace", "outputs", "os.mkfifo('pipe')", printed("errno 1"),
             notes="mknod is denied; were it allowed, run.deny-special-file would refuse"),
    Probe("sparse-terabyte-file", "outputs", expect=printed("errno 27"),
          notes="RLIMIT_FSIZE (file_bytes): no file past the profile's size, sparse or not, so "
                "no size the sandbox reports can pass what the controller records exactly",
          code="""try:
    with open("big", "wb") as f:
        f.truncate(1 << 40)
    outcome = "made"
except OSError as exc:
    outcome = f"errno {exc.errno}"
print("result:", outcome, flush=True)
"""),
    Probe("tar-slip", "outputs", expect=printed("errno 30", "errno 13"),
          files=(_archive_file("evil.tar", _tar(("../../etc/sandgate-slip", b"x"))),),
          notes="a submitted archive unpacked naively: '..' leads only to read-only ground",
          code="""import tarfile
try:
    with tarfile.open("evil.tar") as archive:
        archive.extractall(".")
    outcome = "extracted"
except OSError as exc:
    outcome = f"errno {exc.errno}"
print("result:", outcome, flush=True)
"""),
    Probe("tar-symlink-slip", "outputs", expect=Expect("rule", value="run.deny-escaping-symlink"),
          files=(_archive_file("evil.tar", _tar(("escape", "/etc"),
                                                ("escape/sandgate-slip", b"x"))),),
          notes="a link member to /etc, then a file through it: the write meets a read-only "
                "/etc, and the link left behind is refused",
          code="""import os, tarfile
try:
    with tarfile.open("evil.tar") as archive:
        archive.extractall(".")
except OSError as exc:
    print("result: errno", exc.errno, flush=True)
if os.path.exists("/etc/sandgate-slip"):
    os.remove("escape")  # a breach: take the link away, so that no rule can mask it
"""),
    Probe("zip-slip", "outputs", expect=printed("errno 30", "errno 13"),
          files=(_archive_file("evil.zip", _zip("../../usr/lib/sandgate-slip")),),
          notes="zip members written by hand (zipfile's own extract strips '..')",
          code="""import os, zipfile
outcome = "written"
with zipfile.ZipFile("evil.zip") as archive:
    for name in archive.namelist():
        try:
            with open(os.path.join("/workspace", name), "wb") as out:
                out.write(archive.read(name))
        except OSError as exc:
            outcome = f"errno {exc.errno}"
print("result:", outcome, flush=True)
"""),
    Probe("symlink-swapped-in-a-loop", "outputs", expect=Expect("state", value="committed"),
          notes="a detached child swaps a link and rewrites a file as fast as it can; nothing "
                "of the sandbox outlives the run, and the tree committed is the one validated",
          code="""import os, signal, time
open("a.txt", "w").write("a")
open("b.txt", "w").write("b")
os.symlink("a.txt", "link")
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    n = 0
    while True:
        n += 1
        os.symlink("b.txt" if n % 2 else "a.txt", "link.new")
        os.replace("link.new", "link")
        open("data.txt", "w").write(str(n))
time.sleep(0.5)
print("result: swapping", flush=True)
"""),
]

# Numbers the census never calls: they would end, stop or fork the prober (exit, pause,
# fork/clone/execve, seccomp(STRICT), rseq, blocking waits with no timeout), or kill it (tripwires
# are skipped by name in the rendered code).
CENSUS_SKIP = frozenset({7, 15, 23, 34, 56, 57, 58, 59, 60, 61, 62, 200, 231, 234, 247, 270,
                         271, 281, 317, 322, 334, 435})
CENSUS = """import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
seen = {{}}
for nr in {numbers}:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    seen[nr] = ctypes.get_errno() if r == -1 else -1
print("result:", json.dumps(seen, separators=(",", ":")), flush=True)
"""


def known_syscalls() -> dict[int, str]:
    """Every syscall number this architecture assigns, with its name (from libseccomp)."""
    import pyseccomp

    arch, found = pyseccomp.system_arch(), {}
    for nr in range(0, 460):
        try:
            found[nr] = pyseccomp.resolve_syscall(arch, nr).decode()
        except (OSError, ValueError):
            continue
    return found


def census_code(profile: Profile) -> str:
    """The census for one profile: every assigned syscall number but the skipped ones and
    its tripwires. (Unassigned numbers are left out: they are no kernel surface.)"""
    numbers = [nr for nr, name in known_syscalls().items()
               if nr not in CENSUS_SKIP and name not in profile.tripwires]
    return CENSUS.format(numbers=numbers)


def census_expectation(profile: Profile) -> Expect:
    """Every number the profile denies, with the errnos that mean "denied" (``nr:e1/e2``).

    A syscall the profile does not name gets its default errno; runc answers ENOSYS instead
    for syscalls newer than the libseccomp it was built with (so that glibc falls back),
    which is a denial all the same.
    """
    default = profile.seccomp.get("defaultErrnoRet", 1)
    rules = profile.seccomp.get("syscalls", [])
    assert isinstance(rules, list)
    named = {name for rule in rules for name in rule.get("names", [])}
    expected = set()
    for nr, name in known_syscalls().items():
        outcome = syscall_expectation(profile, name)
        if outcome.kind != "printed" or name in ARGUMENT_FILTERED_ALLOWS:
            continue
        errno = next(iter(outcome.tokens)).split()[1]
        accepted = errno if name in named else f"{default}/{ENOSYS}"
        expected.add(f"{nr}:{accepted}")
    return Expect("census", frozenset(expected))


ENOSYS = 38
ARGUMENT_FILTERED_ALLOWS = frozenset({"clone", "socket", "prctl"})
CENSUS_PROBE = Probe(
    "syscall-census", "kernel surface", code="", render=census_code, census=True,
    notes="every syscall number with zero arguments: any the profile denies must answer "
          "exactly its errno, or the profile and the sandbox have drifted apart")

BATTERY: tuple[Probe, ...] = (CENSUS_PROBE, *KERNEL, *SOCKETS, *EGRESS, *FILESYSTEM,
                              *IDENTITY, *RESOURCES, *OUTPUTS)
