"""``sandgate profiles``: list, show, diff, lint and learn seccomp and resource profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controller.cli.run import language_of
from controller.core.models import Language
from controller.core.profile import Profile
from controller.errors import InputError
from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``profiles``."""
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


def _profiles(args: argparse.Namespace) -> int:
    from controller.profiles.load import load_profiles

    for name, profile in load_profiles(Settings().profiles_dir).items():
        limits = profile.limits
        print(f"{name:10} {profile.digest[:19]}  image={profile.image} "
              f"mem={limits.memory_bytes >> 20}MiB pids={limits.pids} "
              f"time={limits.wall_time_s}s network={profile.network}")
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

    language = language_of(args)
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
