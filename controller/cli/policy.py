"""``sandgate policy``: test policy bundles, explain a submission's decisions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.core.models import Submission
from controller.core.untrusted import printable_line
from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy``."""
    policy = commands.add_parser("policy", help="policy bundles").add_subparsers(required=True)
    test = policy.add_parser("test", help="run bundles' test cases; fails on any mismatch")
    test.add_argument("bundles", type=Path, nargs="+")
    test.set_defaults(handler=_policy_test)
    explain = policy.add_parser("explain", help="which rules decided a submission, and why")
    explain.add_argument("submission_id")
    explain.set_defaults(handler=_policy_explain)


def _policy_test(args: argparse.Namespace) -> int:
    from controller.tools.policy_cases import run_cases

    passed = failed = 0
    for bundle in args.bundles:
        for result in run_cases(bundle):
            if not result.passed or args.verbose:
                print(result.describe())
            passed, failed = passed + result.passed, failed + (not result.passed)
    print(f"policy tests: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def _policy_explain(args: argparse.Namespace) -> int:
    from controller.adapters.store.submissions import Store

    found = Store(Settings().db_path).get(args.submission_id)
    if found is None:
        print(f"sandgate: no submission {args.submission_id!r}", file=sys.stderr)
        return 2
    print(f"{found.id}: {found.state.value} ({printable_line(found.reason)})")
    for decision in found.decisions:
        print(f"  {decision.gate.value:15} {decision.outcome.value:17} bundle "
              f"{decision.bundle_name}@{decision.bundle_version} {decision.bundle_digest}")
        for rule in decision.rules:
            print(f"    {rule.id}: {rule.reason}")
        for error in decision.errors:
            print(f"    error: {printable_line(error)}")
        if decision.shadow is not None:
            print(f"    shadow {decision.shadow.bundle_digest}: {decision.shadow.outcome.value}"
                  f"{' (disagrees)' if decision.shadow.disagrees else ''} "
                  f"{[rule.id for rule in decision.shadow.rules]}")
    if found.approval is not None:
        verdict = "approved" if found.approval.approve else "rejected"
        print(f"  {verdict} by {found.approval.approver} at {found.approval.at.isoformat()}: "
              f"{printable_line(found.approval.reason)}"
              + (f" (radius {found.approval.radius_sha256})"
                 if found.approval.radius_sha256 else ""))
    _explain_binding(found)
    return 0


def _explain_binding(found: Submission) -> None:
    """The dry run's radius and how far the real run went beyond it."""
    if found.radius is not None:
        radius = found.radius
        totals = ", ".join(f"{name} {value}" for name, value in radius.totals.items())
        print(f"  radius {radius.digest}: {radius.created} created, {radius.modified} "
              f"modified, {radius.deleted} deleted, exit {radius.exit_code}; {totals}")
    if found.divergence is not None:
        seen = found.divergence
        if seen.content_changed or seen.dry_only:
            print(f"  within the radius: {seen.content_changed} paths with other content "
                  f"(under {', '.join(map(printable_line, seen.content_roots)) or '-'}), "
                  f"{seen.dry_only} changes of the dry run not made")
        if not seen.diverged:
            print("  divergence: none (the real run stayed within the radius)")
            return
        weighed_apart = {"outside_paths", "content_changed", "content_roots", "dry_only"}
        counts = ", ".join(f"{name} {value}" for name, value in seen.context().items()
                           if value and name not in weighed_apart)
        print(f"  divergence: {counts}")
        for path in seen.sample:
            print(f"    {printable_line(path)}")
        if seen.outside_paths > len(seen.sample):
            print(f"    ... {seen.outside_paths - len(seen.sample)} more (all: sha256 "
                  f"{seen.paths_sha256})")
        if seen.totals_over:
            print(f"    totals past the tolerance: {', '.join(seen.totals_over)}")
