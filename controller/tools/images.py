"""Building the sandbox images: from ``ARG BASE`` where a registry answers, else from a
local Debian base made with ``debootstrap`` and ``docker import``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controller.adapters.runtime.docker import DockerRuntime
from controller.errors import RuntimeUnavailableError
from controller.settings import SHIPPED_ROOT

log = logging.getLogger("sandgate.images")

REGISTRY_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "sandgate/base:bookworm"
SUITE = "bookworm"
IMAGES_DIR = SHIPPED_ROOT / "sandbox_images"
# Which version of its build directory an image was built from: ``--if-missing`` rebuilds an
# image whose recipe changed (a machine keeps its images across checkouts).
RECIPE_LABEL = "dev.sandgate.recipe"


@dataclass(frozen=True)
class Built:
    image: str
    image_id: str
    base: str


def build_images(runtime: DockerRuntime, *, base: str | None = None, local_only: bool = False,
                 directory: Path = IMAGES_DIR) -> list[Built]:
    """Build every ``sandbox_images/<name>/Dockerfile`` as ``sandgate/<name>:latest``."""
    chosen = base or choose_base(runtime, local_only=local_only)
    built = []
    for dockerfile in sorted(directory.glob("*/Dockerfile")):
        image = f"sandgate/{dockerfile.parent.name}:latest"
        log.info("building %s from %s", image, chosen)
        image_id = runtime.build(dockerfile.parent, image, {"BASE": chosen},
                                 {RECIPE_LABEL: recipe_digest(dockerfile.parent)})
        built.append(Built(image=image, image_id=image_id, base=chosen))
    return built


def stale_images(runtime: DockerRuntime, directory: Path = IMAGES_DIR) -> list[str]:
    """Images that are missing, or were built from another version of their directory."""
    return [f"sandgate/{dockerfile.parent.name}:latest"
            for dockerfile in sorted(directory.glob("*/Dockerfile"))
            if runtime.image_label(f"sandgate/{dockerfile.parent.name}:latest", RECIPE_LABEL)
            != recipe_digest(dockerfile.parent)]


def recipe_digest(directory: Path) -> str:
    """sha256 over every file of an image's build directory (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"sha256:{digest.hexdigest()}"


def choose_base(runtime: DockerRuntime, *, local_only: bool = False) -> str:
    """The registry's Python image if it can be had, else the local debootstrapped base."""
    if not local_only and (runtime.has_image(REGISTRY_BASE) or runtime.pull(REGISTRY_BASE)):
        return REGISTRY_BASE
    if not runtime.has_image(LOCAL_BASE):
        bootstrap_base(runtime)
    return LOCAL_BASE


def bootstrap_base(runtime: DockerRuntime, image: str = LOCAL_BASE) -> None:
    """debootstrap a minimal Debian with Python 3 and import it as ``image``."""
    if shutil.which("debootstrap") is None:
        raise RuntimeUnavailableError(
            "no registry answers and debootstrap is missing: apt-get install debootstrap")
    mirror = os.environ.get("SANDGATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="sandgate-rootfs-") as scratch:
        rootfs, tarball = Path(scratch) / "rootfs", Path(scratch) / "rootfs.tar"
        log.info("debootstrap %s into %s (a few minutes)", SUITE, rootfs)
        _run(["debootstrap", "--variant=minbase", "--include=python3", SUITE, str(rootfs),
              mirror])
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."])
        runtime.import_rootfs(tarball, image)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-2000:]
        raise RuntimeUnavailableError(f"{command[0]} failed ({result.returncode}): {tail}")
