"""Kernel surface: syscalls a sandbox must not make (each judged by the profile under test),
namespaces it must not enter, the 32-bit ABI, and the census of every syscall number."""

from __future__ import annotations

from controller.core.profile import Profile
from controller.tools.probes.probe import KILLED, Probe, known_syscalls, printed

SYSCALL = """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
r = libc.syscall({nr}, {args})
print("result: errno", ctypes.get_errno() if r == -1 else "none", flush=True)
"""

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


def _syscall(name: str, nr: int, *args: int, category: str = "kernel surface",
             notes: str = "") -> Probe:
    rendered = ", ".join(f"ctypes.c_long({a})" for a in args) or "0"
    return Probe(name=f"syscall-{name}", category=category, syscall=name, notes=notes,
                 code=SYSCALL.format(nr=nr, args=rendered))


def census_code(profile: Profile) -> str:
    """The census for one profile: every assigned syscall number but the skipped ones and
    its tripwires. (Unassigned numbers are left out: they are no kernel surface.)"""
    numbers = [nr for nr, name in known_syscalls().items()
               if nr not in CENSUS_SKIP and name not in profile.tripwires]
    return CENSUS.format(numbers=numbers)


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

CENSUS_PROBE = Probe(
    "syscall-census", "kernel surface", code="", render=census_code, census=True,
    notes="every syscall number with zero arguments: any the profile denies must answer "
          "exactly its errno, or the profile and the sandbox have drifted apart")

