"""Outputs: what a run leaves in the workspace (links out, setuid files, special files, huge
or deep trees, archives that slip) is refused or never lands."""

from __future__ import annotations

import base64
import io
import tarfile
import zipfile

from controller.core.models import SubmittedFile
from controller.tools.probes.probe import Expect, ExpectKind, Probe, attempt, ends, printed


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


OUTPUTS = [
    Probe("symlink-out-of-workspace", "outputs", "import os\nos.symlink('/etc/shadow', 'x')\n",
          Expect(ExpectKind.RULE, value="run.deny-escaping-symlink")),
    Probe("symlink-chain-out-of-workspace", "outputs",
          "import os\nos.symlink('.', 's')\nos.symlink('s/s/s/../../..', 't')\n",
          Expect(ExpectKind.RULE, value="run.deny-escaping-symlink")),
    Probe("setuid-file-in-workspace", "outputs",
          "import os\nopen('tool', 'w').write('x')\nos.chmod('tool', 0o4755)\n",
          Expect(ExpectKind.RULE, value="run.deny-setuid")),
    Probe("deep-directory-nesting", "outputs", expect=ends("denied"),
          notes="paths past 3,000 bytes cannot be walked safely: denied at the dry run",
          code="import os\nfor _ in range(2500):\n    os.mkdir('d')\n    os.chdir('d')\n"),
    attempt("hardlink-out-of-workspace", "outputs", "os.link('/etc/passwd', 'passwd')",
            printed("errno 1", "errno 18"),
            notes="protected hardlinks (EPERM) or a cross-mount link (EXDEV)"),
    attempt("fifo-in-workspace", "outputs", "os.mkfifo('pipe')", printed("errno 1"),
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
    Probe("tar-symlink-slip", "outputs",
          expect=Expect(ExpectKind.RULE, value="run.deny-escaping-symlink"),
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
    Probe("symlink-swapped-in-a-loop", "outputs",
          # Where the link points when each run ends is chance: the same in both runs, the
          # tree validated commits; different, the real run diverged from its dry run.
          expect=ends("committed", "rolled_back"),
          notes="a detached child swaps a link and rewrites a file as fast as it can; nothing "
                "of the sandbox outlives the run, and the tree committed is the one validated "
                "(or, the link pointing elsewhere than in the dry run, none is)",
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
