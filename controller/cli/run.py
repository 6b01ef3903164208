"""``sandgate run``: one file through the whole pipeline, on this machine."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from controller.core.models import Language, Submission, SubmissionRequest, SubmittedFile
from controller.core.untrusted import printable_line
from controller.settings import Settings

SUFFIXES = {".py": Language.PYTHON, ".sh": Language.SH}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run``."""
    run = commands.add_parser("run", help="run one file through the whole pipeline")
    run.add_argument("file", type=Path, help="code to run (.py or .sh)")
    run.add_argument("--workspace", default="default", help="workspace name (default: default)")
    run.add_argument("--profile", default="standard", help="profile name (default: standard)")
    run.add_argument("--lang", choices=[lang.value for lang in Language],
                     help="language (default: from the file suffix)")
    run.add_argument("--add", action="append", default=[], metavar="LOCAL[:DEST]",
                     help="add a local file to the workspace before the run (repeatable)")
    run.add_argument("--agent", default="local", help="principal recorded in the receipt")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.set_defaults(handler=_run)


def language_of(args: argparse.Namespace) -> Language | None:
    """The language of ``args.file``: ``--lang``, else its suffix; None (said on stderr)
    when neither tells."""
    language = Language(args.lang) if args.lang else SUFFIXES.get(args.file.suffix)
    if language is None:
        print(f"sandgate: cannot tell the language of {args.file}; pass --lang", file=sys.stderr)
    return language


def _run(args: argparse.Namespace) -> int:
    from controller.bootstrap import open_controller

    language = language_of(args)
    if language is None:
        return 2
    request = SubmissionRequest(
        language=language, code=args.file.read_text(), workspace=args.workspace,
        profile=args.profile, agent=args.agent, files=tuple(_added(spec) for spec in args.add))
    controller = open_controller(Settings())
    submission = controller.submit(request)
    if args.json:
        print(json.dumps(result_json(submission)))
    else:
        _print_result(submission)
    return 0 if submission.state.value == "committed" else 1


def result_json(submission: Submission) -> dict[str, Any]:
    """The CLI's --json object: the submission's outcome and why."""
    return {
        "id": submission.id,
        "state": submission.state.value,
        "reason": submission.reason,
        "decisions": [d.model_dump(mode="json") for d in submission.decisions],
        "limits_hit": sorted({limit.value for run in (submission.dry_run, submission.bounded_run)
                              if run is not None for limit in run.limits_hit}),
        "stdout": submission.stdout,
        "stderr": submission.stderr,
        "workspace": submission.request.workspace,
        "version_before": submission.base_version,
        "version_after": submission.new_version,
        "receipt_seq": submission.receipt_seq,
        "evidence_dir": submission.evidence_dir,
    }


def _print_result(submission: Submission) -> None:
    # Reasons quote names and outputs the sandbox chose: shown escaped, one value a line,
    # so no newline, carriage return or escape sequence can fake or rewrite a line.
    print(f"{submission.id}  {submission.state.value}  (receipt #{submission.receipt_seq})")
    print(f"  reason: {printable_line(submission.reason)}")
    if submission.new_version is not None:
        print(f"  workspace {submission.request.workspace}: "
              f"v{submission.base_version} -> v{submission.new_version}")
    for name, text in (("stdout", submission.stdout), ("stderr", submission.stderr)):
        if text:
            print(f"  {name}:\n" + "".join(f"    {printable_line(line)}\n"
                                         for line in text.removesuffix("\n").split("\n")))


def _added(spec: str) -> SubmittedFile:
    local, _, destination = spec.partition(":")
    data = Path(local).read_bytes()
    return SubmittedFile(path=destination or Path(local).name,
                         content=base64.b64encode(data).decode(), encoding="base64")
