"""Identity: capabilities, privileges, the user, and secrets of the controller's."""

from __future__ import annotations

from controller.tools.probes.probe import Probe, attempt, printed

IDENTITY = [
    attempt("capabilities-effective", "identity",
            "[l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]",
            printed("0000000000000000")),
    attempt("capabilities-bounding", "identity",
            "[l.split()[1] for l in open('/proc/self/status') if l.startswith('CapBnd')][0]",
            printed("0000000000000000")),
    attempt("no-new-privs", "identity",
            "[l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0]",
            printed("1")),
    attempt("seccomp-filter-mode", "identity",
            "[l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]",
            printed("2")),
    attempt("not-root", "identity", "os.getuid() != 0 and os.geteuid() != 0", printed("True")),
    attempt("no-controller-secrets-in-env", "identity",
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
    attempt("no-secrets-in-other-environ", "identity",
            "sum(1 for p in os.listdir('/proc') if p.isdigit() and "
            "b'SANDGATE' in open(f'/proc/{p}/environ', 'rb').read())", printed("0")),
]
