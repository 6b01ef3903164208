"""``sandgate submit``: one file to a running service, through its REST API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from controller.cli.run import language_of
from controller.core.models import Language


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submit``."""
    submit = commands.add_parser("submit", help="submit a file to a running service")
    submit.add_argument("file", type=Path)
    submit.add_argument("--url", default="http://127.0.0.1:8080")
    submit.add_argument("--key", default=os.environ.get("SANDGATE_API_KEY"),
                        help="API key (default: $SANDGATE_API_KEY)")
    submit.add_argument("--lang", choices=[lang.value for lang in Language])
    submit.add_argument("--workspace", default="default")
    submit.add_argument("--profile", default="standard")
    submit.add_argument("--wait", type=float, default=60, help="seconds to wait (max 60)")
    submit.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> int:
    from controller.client import ClientError, SandgateClient

    language = language_of(args)
    if language is None:
        return 2
    if not args.key:
        print("sandgate: pass --key or set SANDGATE_API_KEY", file=sys.stderr)
        return 2
    with SandgateClient(args.url, args.key) as client:
        try:
            result = client.submit(args.file.read_text(), language=language.value,
                                   workspace=args.workspace, profile=args.profile,
                                   wait=min(args.wait, 60))
        except ClientError as exc:
            print(f"sandgate: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(result))
    return 0 if result["state"] == "committed" else 1
