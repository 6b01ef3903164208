"""``sandgate probe``: the escape-probe battery against an image and a profile."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.errors import InputError
from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``probe``."""
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
