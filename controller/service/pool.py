"""Pools of started sandboxes: a profile's submissions find both runs' sandboxes waiting.

A container's cold start is most of a run's cost, so a profile may keep ``pool.min`` pairs
(``pairs``: a dry run's sandbox and a real run's, one held uid) started ahead, per language
it names, keyed by what is fixed when a container is created: the profile's digest, the image
id, the language. A background thread refills the pools one pair at a time (on two cores a
second concurrent start only slows the first), and, while a pool still holds a pair, only
when no submission is being driven (a start beside a run slows the run: the pairs are for
the latency the runs feel); a miss (a submission that found none, and
started its own) raises a pool's target by one up to ``pool.max``; an idle pair older than
``pool.ttl_s`` is replaced, and its pool's target falls back by one towards ``min``. A pair
whose profile changed or went, or whose image tag moved, serves no one and is removed.

A pair is used once: the submission that takes it takes its uid (in the store, where the
uid was held so that no other run could claim it), runs in its sandboxes and removes them.
Nothing of one submission reaches the next: each container, scratch filesystem and network
namespace is its own. ``close`` (shutdown) removes every pair; after a crash, reconcile
removes the containers (labelled with this controller's owner), the directories and holds.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.adapters.fs.trees import remove_tree
from controller.core.models import Language, Phase
from controller.core.ports import (
    COMMANDS,
    SUBMISSION_UIDS,
    RunSpec,
    SandboxRuntime,
    SubmissionStore,
    Tmpfs,
)
from controller.core.profile import Profile
from controller.errors import SandgateError
from controller.service.pairs import Pair, PoolKey, Started, discard_pair
from controller.service.runs import PHASE_DIRS, mount_scratch

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the refill looks, unless a take or a miss wakes it sooner
# Pairs every pool of this controller may hold at once: each holds a uid that submissions
# could otherwise claim, so pools never take more than a quarter of them.
MAX_PAIRS = len(SUBMISSION_UIDS) // 4


@dataclass
class PoolState:
    """One profile's pools, as ``GET /v1/profiles`` shows them."""

    min: int
    max: int
    target: int = 0  # per language: min, raised by misses up to max
    ready: int = 0
    hits: int = 0
    misses: int = 0
    replaced: int = 0  # idle past ttl_s, or stale (profile or image changed)
    failed_starts: int = 0


@dataclass
class _Counts:
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    replaced: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class Pool:
    """Every profile's pools of one controller (``owner``), under ``root``."""

    def __init__(self, runtime: SandboxRuntime, store: SubmissionStore, tmpfs: Tmpfs, *,
                 root: Path, owner: str, profiles: Callable[[], Mapping[str, Profile]],
                 busy: Callable[[], bool] = lambda: False) -> None:
        self.runtime, self.store, self.tmpfs = runtime, store, tmpfs
        self.root, self.owner, self.profiles = root, owner, profiles
        self.busy = busy  # whether submissions are being driven now
        self._ready: dict[PoolKey, list[Pair]] = {}
        self._target: dict[PoolKey, int] = {}
        self._counts = _Counts()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what submissions see ------------------------------------------------------------

    def take(self, profile: Profile, language: Language, image: str) -> Pair | None:
        if self._thread is None or profile.pool.max == 0:
            return None  # not running, or no pool for this profile: no miss either
        key = PoolKey(profile.name, profile.digest, image, language)
        with self._lock:
            pairs = self._ready.get(key)
            if pairs:
                self._counts.hits[profile.name] += 1
                self._wake.set()  # one fewer: refill
                return pairs.pop(0)
            self._counts.misses[profile.name] += 1
            if language in profile.pool.languages:
                self._target[key] = min(profile.pool.max,
                                        self._target.get(key, profile.pool.min) + 1)
            self._wake.set()
            return None

    def poke(self) -> None:
        """Look again now (a submission has ended: a deferred refill may start)."""
        self._wake.set()

    def state(self) -> dict[str, PoolState]:
        with self._lock:
            found = {}
            for name, profile in self.profiles().items():
                keys = [key for key in self._ready if key.profile == name]
                found[name] = PoolState(
                    min=profile.pool.min, max=profile.pool.max,
                    target=max((self._target.get(key, profile.pool.min) for key in keys),
                               default=profile.pool.min if self._thread else 0),
                    ready=sum(len(self._ready[key]) for key in keys),
                    hits=self._counts.hits[name], misses=self._counts.misses[name],
                    replaced=self._counts.replaced[name],
                    failed_starts=self._counts.failed[name])
            return found

    # -- its life --------------------------------------------------------------------------

    def start(self) -> None:
        """Start refilling (once the controller has reconciled: nothing of a crash left)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sandgate-pool",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop refilling and remove every pair (shutdown): nothing is left running."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=60)
        with self._lock:
            pairs = [pair for pairs in self._ready.values() for pair in pairs]
            self._ready.clear()
        for pair in pairs:
            self._discard(pair)
        self.store.drop_uid_holds(self.owner)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refill()
            except Exception:  # the loop must outlive one bad pass; the next pass retries
                log.exception("pool refill failed")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def refill(self) -> None:
        """One pass: remove stale and expired pairs, then start what each pool lacks, one
        pair at a time (checking for a stop between them)."""
        profiles = self.profiles()
        wanted: dict[PoolKey, tuple[Profile, int]] = {}
        unresolved: set[str] = set()
        for profile in profiles.values():
            if profile.pool.max == 0:
                continue
            try:
                image = self.runtime.image_id(profile.image)
            except SandgateError as exc:  # its pairs are kept: the image may be back soon
                log.warning("pool %s: its image cannot be resolved: %s", profile.name, exc)
                unresolved.add(profile.name)
                continue
            for language in profile.pool.languages:
                key = PoolKey(profile.name, profile.digest, image, language)
                with self._lock:  # ``take`` raises targets meanwhile
                    wanted[key] = (profile, self._target.setdefault(key, profile.pool.min))
        self._retire(wanted, unresolved)
        for key, (profile, target) in wanted.items():
            while (not self._stop.is_set() and len(self._ready.get(key, ())) < target
                   and self._held() < MAX_PAIRS):
                if self._ready.get(key) and self.busy():
                    break  # it still serves the next one: started when the runs are done
                pair = self._start_pair(key, profile)
                if pair is None:
                    break
                with self._lock:
                    if not self._stop.is_set():
                        self._ready.setdefault(key, []).append(pair)
                        continue
                self._discard(pair)  # closed meanwhile: nothing is left after close

    def _held(self) -> int:
        with self._lock:
            return sum(len(pairs) for pairs in self._ready.values())

    def _retire(self, wanted: Mapping[PoolKey, tuple[Profile, int]],
                unresolved: set[str]) -> None:
        """Pairs no pool wants (stale) or idle past their ttl: removed; each expired pair
        lowers its pool's target by one, towards its min (what a burst of misses raised
        falls back as its pairs go unused)."""
        now, gone = time.monotonic(), []
        with self._lock:
            for key in list(self._ready):
                if key.profile in unresolved:
                    continue
                profile = wanted.get(key, (None, 0))[0]
                keep = [pair for pair in self._ready[key] if profile is not None
                        and now - pair.born < profile.pool.ttl_s]
                gone += [pair for pair in self._ready[key] if pair not in keep]
                if profile is not None and len(keep) < len(self._ready[key]):
                    expired = len(self._ready[key]) - len(keep)
                    self._target[key] = max(profile.pool.min, self._target[key] - expired)
                self._ready[key] = keep
                if profile is None:
                    del self._ready[key]
                    self._target.pop(key, None)
        for pair in gone:
            self._counts.replaced[pair.key.profile] += 1
            self._discard(pair)

    def _start_pair(self, key: PoolKey, profile: Profile) -> Pair | None:
        holder = f"pool-{secrets.token_hex(8)}"
        root = self.root / holder
        started: list[Started] = []
        try:
            uid = self.store.hold_uid(holder, self.owner, SUBMISSION_UIDS)
            for phase in (Phase.DRY_RUN, Phase.BOUNDED):
                spec = RunSpec(submission_id=holder, phase=phase, profile=profile,
                               command=COMMANDS[key.language][1],
                               workspace_dir=root / PHASE_DIRS[phase] / "work",
                               code_dir=root / PHASE_DIRS[phase] / "code", image=key.image,
                               network=profile.network and phase is Phase.BOUNDED, uid=uid)
                mount_scratch(self.tmpfs, spec)
                started.append(Started(spec, self.runtime.start(spec)))
        except Exception as exc:  # nothing half-made is kept; the next pass tries again
            log.warning("pool %s: a pair could not be started: %s", key.profile, exc)
            self._counts.failed[key.profile] += 1
            for one in started:
                self._quietly(one.discard)
            self._quietly(lambda: self.tmpfs.release(root))
            self._quietly(lambda: remove_tree(root))
            self._quietly(lambda: self.store.drop_uid_holds(self.owner, holder))
            return None
        return Pair(key=key, holder=holder, uid=uid, root=root, dry=started[0],
                    real=started[1], born=time.monotonic())

    def _discard(self, pair: Pair) -> None:
        self._quietly(lambda: discard_pair(self.tmpfs, pair))
        self._quietly(lambda: self.store.drop_uid_holds(self.owner, pair.holder))

    @staticmethod
    def _quietly(step: Callable[[], object]) -> None:
        """A clean-up step that must not stop the others: what it leaves (a container, a
        mount, a hold) is this controller's, and reconcile removes it at the next start."""
        try:
            step()
        except Exception:
            log.exception("pool: a clean-up step failed; left for reconcile")
