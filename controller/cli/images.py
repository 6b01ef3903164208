"""``sandgate images``: build the sandbox images."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``images``."""
    images = commands.add_parser("images", help="sandbox images").add_subparsers(required=True)
    build = images.add_parser("build", help="build sandbox_images/* (registry or debootstrap)")
    build.add_argument("--base", help="base image to build from (default: detect)")
    build.add_argument("--local", action="store_true",
                       help="do not try a registry: build from the debootstrapped base")
    build.add_argument("--if-missing", action="store_true",
                       help="do nothing when every sandbox image exists and was built "
                            "from its current directory (else rebuild)")
    build.set_defaults(handler=_build_images)


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
