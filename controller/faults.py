"""Crash points for the chaos suite: ``SANDGATE_CRASH_AT=<point>`` SIGKILLs the controller
the moment it reaches that point, exactly as a power cut would, so the tests can prove that
recovery ends every submission safely.

Points: every state name (right after that move is on disk), ``published`` (the workspace
version renamed into place, its transaction not yet committed) and ``sealed`` (a terminal
state and its receipt committed). Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal

ENV = "SANDGATE_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
