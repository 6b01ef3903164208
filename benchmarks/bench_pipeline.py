"""Sandgate's performance figures, each against a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_pipeline [--runs N] [--out benchmarks/results.json]

- end-to-end latency of ``print(1)`` through the whole pipeline (dry run, policy, bounded
  run, validation, commit, signed receipt), in process, against a raw hardened
  ``docker run --rm`` of the same code with the same profile;
- policy decision latency (shipped bundle);
- receipt sign + append latency, and verification throughput of the exported log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.adapters.policy.cedar import CedarEngine
from controller.adapters.runtime.docker import DockerRuntime
from controller.core.gate import assessment_context
from controller.core.models import Diff, Gate, Observation, Phase, State, StreamSummary, Submission
from controller.core.records import changes_digest
from controller.profiles.load import load_profile
from controller.settings import SHIPPED_ROOT
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python

PROFILE = load_profile(SHIPPED_ROOT / "profiles" / "standard.yaml")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": round(statistics.median(samples), 3),
            "p95_ms": round(percentile(samples, 0.95), 3), "min_ms": round(min(samples), 3)}


def raw_docker_run(seccomp: Path) -> None:
    limits = PROFILE.limits
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs",
         f"/tmp:rw,nosuid,nodev,noexec,size={limits.tmpfs_bytes}", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "--security-opt", f"seccomp={seccomp}",
         "--user", "10001:10001", "--pids-limit", str(limits.pids),
         "--memory", str(limits.memory_bytes), "--memory-swap", str(limits.memory_bytes),
         "--log-driver", "none", PROFILE.image, "python3", "-c", "print(1)"],
        check=True, capture_output=True)


def bench_end_to_end(runs: int, scratch: Path) -> dict[str, Any]:
    seccomp = scratch / "seccomp.json"
    seccomp.write_text(json.dumps(PROFILE.seccomp))
    runtime = DockerRuntime(owner="sandgate-bench")
    controller = make_controller(scratch / "data", runtime)
    raw_docker_run(seccomp)  # warm the image cache for both
    controller.submit(python("print(1)"))
    raw, ours = [], []
    for _ in range(runs):  # interleaved, so both see the same machine load
        raw += timed(lambda: raw_docker_run(seccomp), 1)
        start = time.perf_counter()
        result = controller.submit(python("print(1)"))
        ours.append((time.perf_counter() - start) * 1000)
        assert result.state is State.COMMITTED, result.reason
    runtime.client.close()
    return {"raw_docker_run_rm": summary(raw), "sandgate_pipeline": summary(ours),
            "ratio_p50": round(statistics.median(ours) / statistics.median(raw), 2)}


def bench_policy(runs: int, root: Path = SHIPPED_ROOT / "policies" / "default"
                 ) -> dict[str, Any]:
    """Decision latency of the ``run`` action for a clean dry run, with the bundle at root."""
    engine = CedarEngine.from_path(root)
    empty = StreamSummary(size=0, sha256="0" * 64)
    observation = Observation(phase=Phase.DRY_RUN, exit_code=0, wall_time_ms=1, stdout=empty,
                              stderr=empty, image_id="x")
    context = assessment_context(python("print(1)"), PROFILE, observation,
                                 Diff().summary(changes_digest([])),
                                 max_deleted_files=20)
    samples = timed(lambda: engine.decide(Gate.ASSESSMENT, "a", "w", context), runs)
    policies = len(engine.bundle.policies) if engine.bundle else 0
    return {"policies_in_bundle": policies, **summary(samples)}


def fifty_rule_bundle(scratch: Path) -> Path:
    """The shipped bundle plus generated rules, 50 policies in all, over every context part."""
    import shutil

    root = scratch / "bundle50"
    shutil.copytree(SHIPPED_ROOT / "policies" / "default", root)
    engine = CedarEngine.from_path(root)
    have = len(engine.bundle.policies) if engine.bundle else 0
    attributes = ["created", "modified", "deleted", "hardlinks", "files_after", "size_after"]
    rules = []
    for n in range(50 - have):
        attribute = attributes[n % len(attributes)]
        rules.append(
            f'@id("bench.rule-{n}")\n@reason("generated")\n'
            f'forbid (principal, action == Action::"run", resource)\n'
            f'when {{ context.dry_run_diff.{attribute} > {1000 + n} && '
            f'context.request.code_bytes > {n} && context.profile.pids < {5000 + n} }};\n')
    (root / "policies" / "bench.cedar").write_text("\n".join(rules))
    return root


def bench_receipts(runs: int, scratch: Path) -> dict[str, Any]:
    from controller.adapters.runtime.fake import FakeRuntime

    controller = make_controller(scratch / "receipts", FakeRuntime())
    subs = []
    for n in range(runs):
        request = python("print(1)")
        sub = Submission(id=f"b{n}", trace_id="t", request=request,
                         code_sha256=hashlib.sha256(request.code.encode()).hexdigest())
        controller.store.insert(sub)
        subs.append(sub)
    it = iter(subs)
    samples = timed(lambda: controller.sealer.finish(next(it), State.DENIED), runs)
    lines = [envelope for _, envelope in controller.store.receipts()]
    keys = load_public_keys("".join(k.pem for k in controller_keys(scratch)).encode())
    start = time.perf_counter()
    report = verify_log(lines, keys)
    seconds = time.perf_counter() - start
    assert report.ok
    return {"sign_and_append": summary(samples),
            "verify_per_receipt_ms": round(seconds * 1000 / len(lines), 4),
            "verify_100k_projected_s": round(seconds / len(lines) * 100_000, 1)}


def controller_keys(scratch: Path) -> list[Any]:
    from controller.adapters.signing import KeyRing

    return KeyRing(scratch / "receipts" / "keys").public_keys()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandgate-bench-") as tmp:
        scratch = Path(tmp)
        results = {
            "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                        "kernel": platform.release()},
            "end_to_end_print1": bench_end_to_end(args.runs, scratch),
            "policy_decision": bench_policy(2000),
            "policy_decision_50_rules": bench_policy(2000, fifty_rule_bundle(scratch)),
            "receipts": bench_receipts(1000, scratch),
        }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
