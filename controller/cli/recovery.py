"""``sandgate chaos`` and ``sandgate reconcile``: the crash scenarios, and ending what a
crash interrupted."""

from __future__ import annotations

import argparse
import sys

from controller.core.untrusted import printable_line
from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``chaos`` and ``reconcile``."""
    chaos = commands.add_parser("chaos", help="run the chaos scenarios (tests/chaos) on this "
                                              "machine's Docker engine")
    chaos.add_argument("scenario", nargs="?", help="pytest -k expression, e.g. sigkill, disk")
    chaos.set_defaults(handler=_chaos)

    commands.add_parser("reconcile", help="end interrupted submissions, remove stray "
                                          "containers").set_defaults(handler=_reconcile)


def _chaos(args: argparse.Namespace) -> int:
    import subprocess

    from controller.settings import SHIPPED_ROOT

    suite = SHIPPED_ROOT / "tests" / "chaos"
    if not suite.is_dir():
        print(f"sandgate: the chaos scenarios ship with the source tree ({suite} is missing)",
              file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "pytest", str(suite), "-q"]
    if args.scenario:
        command += ["-k", args.scenario]
    return subprocess.run(command, cwd=SHIPPED_ROOT, check=False).returncode


def _reconcile(args: argparse.Namespace) -> int:
    from controller.bootstrap import open_controller

    ended = open_controller(Settings(), alone="sandgate reconcile").reconcile()
    for submission in ended:
        print(f"{submission.id}: {submission.state.value} ({printable_line(submission.reason)})")
    print(f"reconciled {len(ended)} interrupted submission(s)")
    return 0
