"""Resources: bombs, spins and floods that must end at a named limit, and every writable
mount filled to its cap."""

from __future__ import annotations

from controller.core.models import Language
from controller.tools.probes.probe import Expect, ExpectKind, Probe, attempt, printed

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

RESOURCES = [
    Probe("fork-bomb", "resources", "import os\nwhile True:\n    os.fork()\n",
          Expect(ExpectKind.LIMIT, value="pids")),
    Probe("thread-bomb", "resources",
          "import threading, time\nwhile True:\n"
          "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
          Expect(ExpectKind.LIMIT, value="pids")),
    Probe("memory-bomb", "resources",
          "x = []\nwhile True:\n    x.append(bytearray(10**7))\n",
          Expect(ExpectKind.LIMIT, value="memory")),
    Probe("oom-of-a-child-only", "resources",
          "import subprocess, sys\n"
          "r = subprocess.run([sys.executable, '-c', 'x = []\\nwhile True:\\n"
          "    x.append(bytearray(10**7))'])\nprint('result: child', r.returncode)\n",
          Expect(ExpectKind.LIMIT, value="memory"),
          notes="the parent survives and exits 0; the OOM kill still counts"),
    Probe("cpu-spin", "resources", "while True:\n    pass\n",
          Expect(ExpectKind.LIMIT, value="wall_time")),
    Probe("sleep-ignoring-sigterm", "resources",
          "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)\n",
          Expect(ExpectKind.LIMIT, value="wall_time")),
    Probe("stdout-flood", "resources", "while True:\n    print('x' * 1000)\n",
          Expect(ExpectKind.LIMIT, value="output")),
    Probe("huge-single-line", "resources",
          "import sys\nsys.stdout.write('y' * 50_000_000)\n",
          Expect(ExpectKind.LIMIT, value="output")),
    Probe("stderr-flood", "resources", "yes 1>&2", Expect(ExpectKind.LIMIT, value="output"),
          language=Language.SH),
    attempt("fd-exhaustion", "resources",
            "[open('/dev/null') for _ in range(100000)]", printed("errno 24")),
    attempt("tmp-disk-fill", "resources",
            "(lambda f: [f.write(b'0' * (1 << 20)) and f.flush() for _ in range(4096)])"
            "(open('/tmp/fill', 'wb', buffering=0))", printed("errno 28")),
    attempt("tmp-inode-exhaustion", "resources",
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
