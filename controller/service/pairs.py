"""What a pool keeps ready: pairs of started sandboxes, a dry run's and a real run's, under
one held uid (both runs of a submission run as one uid: nothing tells them apart), each in
scratch directories of its own, waiting at their gates for a submission to take them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.adapters.fs.trees import remove_tree
from controller.core.models import Language
from controller.core.ports import RunSpec, Sandbox, Tmpfs
from controller.core.profile import Profile


@dataclass(frozen=True)
class PoolKey:
    """What is fixed when a sandbox is created: a pair serves only submissions that match."""

    profile: str
    digest: str  # the profile's: a changed profile's pairs serve no one
    image: str  # the image id both runs use
    language: Language  # the command the gate runs


@dataclass(frozen=True)
class Started:
    """A started sandbox for ``spec``, waiting for its run."""

    spec: RunSpec
    sandbox: Sandbox

    def wait(self) -> Sandbox:
        return self.sandbox

    def discard(self) -> None:
        self.sandbox.discard()


@dataclass(frozen=True)
class Pair:
    key: PoolKey
    holder: str  # the name its uid is held under (and its containers are labelled with)
    uid: int
    root: Path  # its scratch directories: ``dry`` and ``real``
    dry: Started
    real: Started
    born: float  # time.monotonic() when it was ready


class PairSource(Protocol):
    def take(self, profile: Profile, language: Language, image: str) -> Pair | None:
        """A ready pair for a submission of ``profile`` in ``language`` on ``image``, now or
        never (None: the submission starts its own sandboxes)."""
        ...


def discard_pair(tmpfs: Tmpfs, pair: Pair, *, keep_dirs: bool = False) -> None:
    """Remove both sandboxes (each at most once), release and remove the directories."""
    try:
        for started in (pair.dry, pair.real):
            started.discard()
    finally:
        tmpfs.release(pair.root)
        if not keep_dirs:
            remove_tree(pair.root)
