"""The ``sandgate`` command: thin; parse, call the service, render."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.core.models import Language, Role, Submission, SubmissionRequest, SubmittedFile
from controller.core.profile import Profile
from controller.core.untrusted import printable_line
from controller.errors import InputError, SandgateError
from controller.settings import Settings

SUFFIXES = {".py": Language.PYTHON, ".sh": Language.SH}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
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

    receipts = commands.add_parser("receipts", help="receipt log").add_subparsers(required=True)
    export = receipts.add_parser("export", help="write every receipt, one envelope per line")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="also write a signed checkpoint over exactly the exported receipts "
                             "(sandgate-verify --checkpoint FILE then finds a truncated copy)")
    export.set_defaults(handler=_export_receipts)

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(required=True)
    keys_export = keys.add_parser("export", help="write the public keys (PEM)")
    keys_export.add_argument("--out", type=Path, required=True)
    keys_export.set_defaults(handler=_export_keys)
    keys.add_parser("rotate", help="generate a new signing key").set_defaults(handler=_rotate)

    images = commands.add_parser("images", help="sandbox images").add_subparsers(required=True)
    build = images.add_parser("build", help="build sandbox_images/* (registry or debootstrap)")
    build.add_argument("--base", help="base image to build from (default: detect)")
    build.add_argument("--local", action="store_true",
                       help="do not try a registry: build from the debootstrapped base")
    build.add_argument("--if-missing", action="store_true",
                       help="do nothing when every sandbox image exists and was built "
                            "from its current directory (else rebuild)")
    build.set_defaults(handler=_build_images)

    serve = commands.add_parser("serve", help="run the REST service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=_serve)

    principals = commands.add_parser("principals", help="API identities").add_subparsers(
        required=True)
    add = principals.add_parser("add", help="create a principal; prints its API key once")
    add.add_argument("name")
    add.add_argument("--role", choices=[role.value for role in Role], default="agent")
    quota = principals.add_parser(
        "quota", help="set a principal's share of the run queue (unset: the "
                      "SANDGATE_MAX_*_PER_PRINCIPAL defaults)")
    quota.add_argument("name")
    for command in (add, quota):
        command.add_argument("--max-running", metavar="N|default",
                             help="its submissions running at once")
        command.add_argument("--max-queued", metavar="N|default",
                             help="its submissions waiting (more are refused with 429)")
    add.set_defaults(handler=_principal_add)
    quota.set_defaults(handler=_principal_quota)
    principals.add_parser("list", help="list principals").set_defaults(handler=_principal_list)
    revoke = principals.add_parser("revoke", help="revoke a principal's key")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_principal_revoke)

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

    policy = commands.add_parser("policy", help="policy bundles").add_subparsers(required=True)
    test = policy.add_parser("test", help="run bundles' test cases; fails on any mismatch")
    test.add_argument("bundles", type=Path, nargs="+")
    test.set_defaults(handler=_policy_test)
    explain = policy.add_parser("explain", help="which rules decided a submission, and why")
    explain.add_argument("submission_id")
    explain.set_defaults(handler=_policy_explain)

    probe = commands.add_parser("probe", help="run the escape-probe battery; exit 1 on a breach")
    probe.add_argument("--image", help="image to probe (default: the profile's)")
    probe.add_argument("--profile", default="standard")
    probe.add_argument("--only", metavar="PATTERN", help="regex over probe names and categories")
    probe.add_argument("--junit", type=Path, help="write a JUnit XML report")
    probe.add_argument("--json", type=Path, help="write a JSON report")
    probe.add_argument("--data-dir", type=Path,
                       help="keep the probes' submissions and receipts here (default: a "
                            "temporary directory)")
    probe.set_defaults(handler=_probe)

    chaos = commands.add_parser("chaos", help="run the chaos scenarios (tests/chaos) on this "
                                              "machine's Docker engine")
    chaos.add_argument("scenario", nargs="?", help="pytest -k expression, e.g. sigkill, disk")
    chaos.set_defaults(handler=_chaos)

    commands.add_parser("reconcile", help="end interrupted submissions, remove stray "
                                          "containers").set_defaults(handler=_reconcile)
    profiles = commands.add_parser("profiles", help="seccomp and resource profiles"
                                   ).add_subparsers(required=True)
    profiles.add_parser("list", help="loaded profiles and digests").set_defaults(
        handler=_profiles)
    show = profiles.add_parser("show", help="one profile, resolved (JSON), with its digest")
    show.add_argument("name")
    show.set_defaults(handler=_profile_show)
    diff = profiles.add_parser("diff", help="syscalls, tripwires and limits of A vs B")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.set_defaults(handler=_profile_diff)
    lint = profiles.add_parser("lint", help="check profiles; exit 1 on any error")
    lint.add_argument("files", type=Path, nargs="*", help="profile YAMLs (default: all)")
    lint.set_defaults(handler=_profile_lint)
    learn = profiles.add_parser("learn", help="propose the syscalls a workload needs")
    learn.add_argument("--against", default="standard",
                       help="ceiling profile, and the one the proposal is diffed against")
    learn.add_argument("--lang", choices=[lang.value for lang in Language])
    learn.add_argument("--out", type=Path, help="write the proposed seccomp JSON here")
    learn.add_argument("file", type=Path, help="the workload (after --)")
    learn.set_defaults(handler=_profile_learn)
    return parser


def _language(args: argparse.Namespace) -> Language | None:
    language = Language(args.lang) if args.lang else SUFFIXES.get(args.file.suffix)
    if language is None:
        print(f"sandgate: cannot tell the language of {args.file}; pass --lang", file=sys.stderr)
    return language


def _run(args: argparse.Namespace) -> int:
    from controller.bootstrap import open_controller

    language = _language(args)
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


def _export_receipts(args: argparse.Namespace) -> int:
    from controller.adapters.store.submissions import Store

    settings = Settings()
    store = Store(settings.db_path)
    envelopes = [envelope for _, envelope in store.receipts()]
    args.out.write_text("".join(line + "\n" for line in envelopes))
    print(f"wrote {len(envelopes)} receipts to {args.out}")
    if args.checkpoint is not None:
        from controller.adapters.signing import KeyRing

        # Over what was exported, not what the log holds now: receipts may have been added.
        signed = KeyRing(settings.keys_dir).checkpoint(*store.tree(len(envelopes)))
        args.checkpoint.write_text(signed + "\n")
        print(f"wrote a checkpoint over {len(envelopes)} receipts to {args.checkpoint}")
    return 0


def _export_keys(args: argparse.Namespace) -> int:
    from controller.adapters.signing import KeyRing

    ring = KeyRing(Settings().keys_dir)
    ring.signer()
    keys = ring.public_keys()
    args.out.write_text("".join(key.pem for key in keys))
    print(f"wrote {len(keys)} public key(s) to {args.out}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from controller.adapters.signing import KeyRing

    signer = KeyRing(Settings().keys_dir).rotate()
    print(f"new active key {signer.key_id}\n"
          "the first receipt it signs carries the handover, signed by the key before it; a "
          "running service signs with its old key until it is restarted")
    return 0


def _build_images(args: argparse.Namespace) -> int:
    from controller.adapters.runtime.docker import DockerRuntime
    from controller.tools.images import IMAGES_DIR, build_images, stale_images

    runtime = DockerRuntime()
    wanted = [f"sandgate/{path.parent.name}:latest" for path in IMAGES_DIR.glob("*/Dockerfile")]
    if args.if_missing and not stale_images(runtime):
        print("sandbox images present and current: " + ", ".join(wanted))
        return 0
    for built in build_images(runtime, base=args.base, local_only=args.local):
        print(f"built {built.image} ({built.image_id[:19]}) from {built.base}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from controller.bootstrap import open_controller

    ended = open_controller(Settings()).reconcile()
    for submission in ended:
        print(f"{submission.id}: {submission.state.value} ({printable_line(submission.reason)})")
    print(f"reconciled {len(ended)} interrupted submission(s)")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    from controller.profiles.load import load_profiles

    for name, profile in load_profiles(Settings().profiles_dir).items():
        limits = profile.limits
        print(f"{name:10} {profile.digest[:19]}  image={profile.image} "
              f"mem={limits.memory_bytes >> 20}MiB pids={limits.pids} "
              f"time={limits.wall_time_s}s network={profile.network}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from controller.api.front_door import MAX_HEADER_BYTES, front_door_protocol
    from controller.api.limits import Limits
    from controller.bootstrap import open_api

    settings = Settings()
    app = open_api(settings)
    base = f"http://{args.host}:{args.port}"
    print(f"sandgate: serving on {base} (data: {settings.data_dir}); API docs at {base}/docs\n"
          "first call:\n"
          "  KEY=$(sandgate principals add my-agent --role agent)\n"
          f"  curl -s -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
          f"-d '{{\"language\": \"python\", \"code\": \"print(1)\"}}' "
          f"'{base}/v1/submissions?wait=30'", flush=True)
    limits = Limits.from_settings(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_graceful_shutdown=int(settings.drain_timeout_s),
                # The front door: a head must be whole within header_timeout_s and fit in
                # MAX_HEADER_BYTES; connections are bounded, per source and in all, idle
                # ones closed.
                http=front_door_protocol(limits),
                h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                limit_concurrency=limits.max_connections,
                timeout_keep_alive=limits.keep_alive_s,
                # Off unless asked for: uvicorn would otherwise believe X-Forwarded-For from
                # any loopback client, and the per-address limits with it.
                proxy_headers=settings.trust_proxy_headers,
                forwarded_allow_ips=settings.forwarded_allow_ips)
    return 0


def _principal_add(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals, Quota

    quota = Quota(_quota_option("--max-running", args.max_running, None),
                  _quota_option("--max-queued", args.max_queued, None))
    key = Principals(Settings().db_path).add(args.name, Role(args.role), quota)
    print(key)
    print(f"created {args.role} {args.name!r}; the key above is shown only once",
          file=sys.stderr)
    return 0


def _principal_quota(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals, Quota

    principals = Principals(Settings().db_path)
    current = principals.quota(args.name)
    quota = Quota(_quota_option("--max-running", args.max_running, current.max_running),
                  _quota_option("--max-queued", args.max_queued, current.max_queued))
    principals.set_quota(args.name, quota)
    print(f"{args.name}: {_quota_text(quota)} (a running service applies it from the next "
          "submission on)")
    return 0


def _quota_option(option: str, given: str | None, current: int | None) -> int | None:
    """An option's value: unchanged when not given, None for 'default', else a number."""
    if given is None:
        return current
    if given == "default":
        return None
    try:
        return int(given)
    except ValueError:
        raise InputError(f"{option} takes a number or 'default', not {given!r}") from None


def _quota_text(quota: tuple[int | None, int | None]) -> str:
    running, queued = ("default" if value is None else str(value) for value in quota)
    return f"max_running={running} max_queued={queued}"


def _principal_list(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals

    principals = Principals(Settings().db_path)
    quotas = principals.quotas()
    for principal in principals.list():
        status = "revoked" if principal.revoked else "active"
        print(f"{principal.name:24} {principal.role.value:9} {status:8} "
              f"{principal.created_at.isoformat()}  "
              f"{_quota_text(quotas.get(principal.name, (None, None)))}")
    return 0


def _principal_revoke(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals

    Principals(Settings().db_path).revoke(args.name)
    print(f"revoked {args.name!r}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from controller.client import ClientError, SandgateClient

    language = _language(args)
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
              f"{printable_line(found.approval.reason)}")
    return 0


def _loaded(name: str) -> Profile:
    from controller.profiles.load import load_profiles

    found = load_profiles(Settings().profiles_dir)
    if name not in found:
        raise InputError(f"unknown profile {name!r}; known: {', '.join(sorted(found))}")
    return found[name]


def _profile_show(args: argparse.Namespace) -> int:
    print(json.dumps(_loaded(args.name).model_dump(mode="json"), indent=2))
    return 0


def _profile_diff(args: argparse.Namespace) -> int:
    from controller.profiles.learn import allowed_names

    a, b = _loaded(args.a), _loaded(args.b)
    print(f"--- {a.name} {a.digest}\n+++ {b.name} {b.digest}")
    names_a, names_b = allowed_names(a.seccomp), allowed_names(b.seccomp)
    for name in sorted(names_a - names_b):
        print(f"- allow {name}")
    for name in sorted(names_b - names_a):
        print(f"+ allow {name}")
    for name in sorted(set(a.tripwires) - set(b.tripwires)):
        print(f"- tripwire {name}")
    for name in sorted(set(b.tripwires) - set(a.tripwires)):
        print(f"+ tripwire {name}")
    limits_a, limits_b = a.limits.model_dump(), b.limits.model_dump()
    for key in limits_a:
        if limits_a[key] != limits_b[key]:
            print(f"~ {key}: {limits_a[key]} -> {limits_b[key]}")
    if a.image != b.image or a.network != b.network:
        print(f"~ image/network: {a.image}/{a.network} -> {b.image}/{b.network}")
    return 0


def _profile_lint(args: argparse.Namespace) -> int:
    from controller.profiles.lint import lint_profile

    files = args.files or sorted(Settings().profiles_dir.glob("*.yaml"))
    errors = 0
    for path in files:
        findings = lint_profile(path)
        errors += sum(1 for finding in findings if finding.level == "error")
        for finding in findings:
            print(finding)
        if not findings:
            print(f"ok: {path}")
    return 1 if errors else 0


def _profile_learn(args: argparse.Namespace) -> int:
    from controller.adapters.runtime.docker import DockerRuntime
    from controller.profiles.learn import allowed_names, learn

    language = _language(args)
    if language is None:
        return 2
    ceiling = _loaded(args.against)
    runtime = DockerRuntime(owner=Settings().resolved_owner())
    learned = learn(runtime, ceiling, args.file.read_text(), language,
                    image_id=runtime.image_id(ceiling.image))
    print(f"learned {len(learned.syscalls)} syscalls in {learned.rounds} runs "
          f"(exit codes {list(learned.exit_codes)}); proposal vs {ceiling.name}:")
    for name in sorted(allowed_names(ceiling.seccomp) - learned.syscalls):
        print(f"- allow {name}")
    if args.out:
        args.out.write_text(json.dumps(learned.seccomp, indent=2) + "\n")
        print(f"wrote the proposed seccomp profile to {args.out}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    import tempfile

    from controller.bootstrap import open_controller
    from controller.tools.battery import run_battery, select, write_json, write_junit

    with tempfile.TemporaryDirectory(prefix="sandgate-probe-") as scratch:
        explicit = Settings().owner  # else a label of its own, made in the probe's data dir
        settings = Settings(data_dir=args.data_dir or Path(scratch),
                            owner=f"{explicit}-probe" if explicit else None)
        controller = open_controller(settings)
        if args.profile not in controller.profiles:
            raise InputError(f"unknown profile {args.profile!r}")
        profile = controller.profiles[args.profile]
        if args.image:
            controller.profiles[args.profile] = profile.model_copy(update={"image": args.image})
        probes = select(args.only)
        image = args.image or profile.image
        print(f"probing image {image} with profile {args.profile}: {len(probes)} probes")

        def progress(index: int, result: object) -> None:
            from controller.tools.battery import ProbeResult

            assert isinstance(result, ProbeResult)
            verdict = "contained" if result.contained else "BREACH"
            print(f"[{index:3}/{len(probes)}] {result.probe.name:38} {verdict:9} "
                  f"{result.seconds:5.1f}s", flush=True)

        results = run_battery(controller, args.profile, probes, progress)
    print(f"\n{'probe':38} {'expected':44} {'observed':40} verdict")
    for r in results:
        print(f"{r.probe.name:38} {r.expected.describe()[:44]:44} {r.observed[:60]:40} "
              f"{'ok' if r.contained else 'BREACH'}")
    breaches = [r for r in results if not r.contained]
    meta = {"image": image, "profile": args.profile, "profile_digest": profile.digest}
    if args.json:
        write_json(results, args.json, meta)
    if args.junit:
        write_junit(results, args.junit, f"sandgate-probe-{args.profile}")
    print(f"{len(results) - len(breaches)} passed, {len(breaches)} failed")
    return 1 if breaches else 0


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


if __name__ == "__main__":
    sys.exit(main())
