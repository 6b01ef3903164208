"""The benchmarks' in-process parts run (their figures are ``make bench``'s, never asserted
here): a benchmark that no longer runs is found by the suite, not by the next release."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_pipeline import bench_policy, bench_receipts


def test_the_receipt_and_policy_benchmarks_run(tmp_path: Path) -> None:
    receipts = bench_receipts(3, tmp_path)
    assert receipts["sign_and_append"]["n"] == 3
    assert bench_policy(3)["policies_in_bundle"] > 0
