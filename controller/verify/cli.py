"""``sandgate-verify RECEIPTS.jsonl --key PUBKEY.pem [--from-seq N]``: exit 0 only if every
receipt holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.verify.chain import verify_log
from controller.verify.dsse import VerificationError, load_public_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandgate-verify",
        description="Verify Sandgate receipts (DSSE, Ed25519, hash chain) with no trust in "
                    "the controller.")
    parser.add_argument("receipts", type=Path, help="JSON lines, one DSSE envelope per line")
    parser.add_argument("--key", type=Path, action="append", required=True,
                        help="PEM public key file (repeat for rotated keys)")
    parser.add_argument("--from-seq", type=int, default=1, metavar="N",
                        help="the log is a tail starting at sequence N (default 1: the whole "
                             "log, from its first receipt)")
    args = parser.parse_args(argv)
    if args.from_seq < 1:
        parser.error("--from-seq must be 1 or more")
    try:
        keys = {}
        for path in args.key:
            keys.update(load_public_keys(path.read_bytes()))
        lines = args.receipts.read_text().splitlines()
    except (OSError, ValueError, VerificationError) as exc:
        print(f"sandgate-verify: {exc}", file=sys.stderr)
        return 2
    report = verify_log(lines, keys, first_seq=args.from_seq)
    for problem in report.problems:
        print(f"BAD {problem}")
    verdict = "OK" if report.ok else "FAILED"
    print(f"{verdict}: {report.checked} receipts checked, {len(report.problems)} bad")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
