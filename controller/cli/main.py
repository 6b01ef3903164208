"""The ``sandgate`` command: thin; parse, call the service, render.

Each command group is a module of its own (``run``, ``receipts``, ``images``, ``serve``,
``principals``, ``submit``, ``policy``, ``probes``, ``recovery``, ``profiles``) that registers
its subcommands and holds their handlers; this one assembles the parser, in the order
``--help`` lists the commands, and turns errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from controller.adapters.telemetry import logs
from controller.cli import (
    images,
    policy,
    principals,
    probes,
    profiles,
    receipts,
    recovery,
    run,
    serve,
    submit,
)
from controller.errors import SandgateError
from controller.settings import Settings

GROUPS = (run.register, receipts.register, images.register, serve.register,
          principals.register, submit.register, policy.register, probes.register,
          recovery.register, profiles.register)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        log_format = Settings().log_format
    except ValidationError as exc:
        print(f"sandgate: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(log_format, logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args))
    except SandgateError as exc:
        print(f"sandgate: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"sandgate: invalid submission: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandgate", description=(
        "Sandboxed code execution: dry run, policy, bounded run, validation, signed receipt."))
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for register in GROUPS:
        register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
