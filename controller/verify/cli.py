"""``sandgate-verify RECEIPTS.jsonl --key PUBKEY.pem [--from-seq N] [--checkpoint FILE]
[--code FILE --submission ID]``: exit 0 only if every receipt holds, 1 if one does not, 2 if
the inputs cannot be read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.chain import CodeCheck, LogCheck, verify_log
from controller.verify.checkpoint import CheckpointCheck
from controller.verify.dsse import VerificationError, load_public_keys, strict_json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandgate-verify",
        description="Verify Sandgate receipts (DSSE, Ed25519, hash chain, key schedule, "
                    "checkpoints) with no trust in the controller.")
    parser.add_argument("receipts", type=Path, help="JSON lines, one DSSE envelope per line")
    parser.add_argument("--key", type=Path, action="append", required=True,
                        help="PEM public key file (repeat for rotated keys)")
    parser.add_argument("--from-seq", type=int, default=1, metavar="N",
                        help="the log is a tail starting at sequence N (default 1: the whole "
                             "log, from its first receipt)")
    parser.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="a signed checkpoint (GET /v1/checkpoint, or sandgate receipts "
                             "export --checkpoint): the log must hold every receipt it covers, "
                             "unchanged")
    parser.add_argument("--code", type=Path, metavar="FILE",
                        help="with --submission: the receipt of that submission must name "
                             "FILE's sha256 as its code")
    parser.add_argument("--submission", metavar="ID", help="a submission id (with --code)")
    return parser


def _checked_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.from_seq < 1:
        parser.error("--from-seq must be 1 or more")
    if (args.code is None) != (args.submission is None):
        parser.error("--code and --submission go together")
    if args.checkpoint is not None and args.from_seq != 1:
        parser.error("a checkpoint covers the log from its first receipt: drop --from-seq")
    return args


def _inputs(args: argparse.Namespace) -> tuple[dict[str, Ed25519PublicKey], list[str],
                                               list[LogCheck]]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in args.key:
        keys.update(load_public_keys(path.read_bytes()))
    lines = args.receipts.read_text().splitlines()
    checks: list[LogCheck] = []
    if args.checkpoint is not None:
        checks.append(CheckpointCheck(_json_file(args.checkpoint), keys))
    if args.code is not None:
        checks.append(CodeCheck(args.submission, args.code.read_bytes()))
    return keys, lines, checks


def _json_file(path: Path) -> Any:
    try:
        return strict_json(path.read_bytes())
    except ValueError as exc:
        raise VerificationError(f"{path} is not JSON: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = _checked_args(_parser(), argv)
    try:
        keys, lines, checks = _inputs(args)
    except (OSError, ValueError, VerificationError) as exc:
        print(f"sandgate-verify: {exc}", file=sys.stderr)
        return 2
    report = verify_log(lines, keys, first_seq=args.from_seq, checks=checks)
    for problem in report.problems:
        print(f"BAD {problem}")
    if report.ok:
        for check in checks:
            _print_held(check, args)
    verdict = "OK" if report.ok else "FAILED"
    print(f"{verdict}: {report.checked} receipts checked, {len(report.problems)} bad")
    return 0 if report.ok else 1


def _print_held(check: LogCheck, args: argparse.Namespace) -> None:
    if isinstance(check, CheckpointCheck) and check.checkpoint is not None:
        held = check.checkpoint
        print(f"checkpoint holds: tree size {held.tree_size}, root {held.root_hash}, signed by "
              f"key {held.key_id[:12]} at {held.issued_at}")
    elif isinstance(check, CodeCheck):
        sequences = ", ".join(str(seq) for seq in check.matched)
        print(f"code holds: {args.code} is the code of submission {args.submission} "
              f"(seq {sequences})")


if __name__ == "__main__":
    sys.exit(main())
