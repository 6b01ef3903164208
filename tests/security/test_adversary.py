"""The adversary: Hypothesis writes hostile sandbox programs — file trees with names of any
bytes, sparse sizes up to 2^63, odd modes, times and link targets, fifos; chosen exit statuses
and deaths by signal; arbitrary output bytes; in the dry run, the real run or both — and runs
each through the real pipeline on the real engine. After every one: a decision naming its
cause, every chaos invariant, a restart that reconciles nothing, and a log that a third-party
DSSE implementation verifies.

``SANDGATE_ADVERSARY_EXAMPLES`` sets how many programs (60 by default, as CI runs it).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key, SSlibKey

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.docker import DockerRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.core.lifecycle import TERMINAL
from controller.core.models import State, Submission, SubmissionRequest
from controller.service.controller import Controller
from controller.settings import SHIPPED_ROOT, Settings
from controller.tools.invariants import check
from tests.conftest import make_controller, owned_containers

pytestmark = pytest.mark.docker
EXAMPLES = int(os.environ.get("SANDGATE_ADVERSARY_EXAMPLES", "60"))
PAUSE_S = 0.8  # between the runs, so a program can act in one of them only (by the clock)

NAMES = st.binary(min_size=1, max_size=24).map(
    lambda name: name.replace(b"/", b"\xff").replace(b"\0", b"\x1b")).filter(
    lambda name: name not in (b".", b".."))
TARGETS = st.binary(min_size=1, max_size=48).map(lambda target: target.replace(b"\0", b"/"))
SIZES = st.one_of(st.integers(0, 4096), st.integers(0, 2**63 - 1),
                  st.sampled_from([2**53, 2**53 + 1, 2**62, 2**63 - 1]))
OPERATIONS = st.one_of(
    st.tuples(st.just("file"), NAMES, SIZES, st.binary(max_size=64)),
    st.tuples(st.just("dir"), NAMES),
    st.tuples(st.just("symlink"), NAMES, TARGETS),
    st.tuples(st.just("fifo"), NAMES),
    st.tuples(st.just("chmod"), NAMES, st.integers(0, 0o7777)),
    st.tuples(st.just("utime"), NAMES, st.integers(-(2**62), 2**62)),
)
ENDINGS = st.one_of(st.tuples(st.just("exit"), st.integers(0, 255)),
                    st.tuples(st.just("segfault"), st.just(0)),
                    st.tuples(st.just("abort"), st.just(0)))

PROGRAM = """import ctypes, os, sys, time
acts = {when!r} == "both" or ({when!r} == "real") == (time.time() > {switch!r})
if acts:
    for op in {operations!r}:
        try:
            kind, name = op[0], op[1]
            if kind == "file":
                fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.write(fd, op[3])
                    os.ftruncate(fd, op[2])
                finally:
                    os.close(fd)
            elif kind == "dir":
                os.mkdir(name)
            elif kind == "symlink":
                os.symlink(op[2], name)
            elif kind == "fifo":
                os.mkfifo(name)
            elif kind == "chmod" and not os.path.islink(name):
                os.chmod(name, op[2])
            elif kind == "utime":
                os.utime(name, ns=(op[2], op[2]), follow_symlinks=False)
        except (OSError, OverflowError, ValueError):
            pass  # the program carries on, as hostile code would
    sys.stdout.buffer.write({stdout!r})
    sys.stderr.buffer.write({stderr!r})
    sys.stdout.flush()
    sys.stderr.flush()
    ending, value = {ending!r}
    if ending == "segfault":
        ctypes.string_at(0)
    if ending == "abort":
        os.abort()
    os._exit(value)
"""


@dataclass(frozen=True)
class Hostile:
    operations: tuple[tuple[Any, ...], ...]
    stdout: bytes
    stderr: bytes
    ending: tuple[str, int]
    when: str  # "dry", "real" or "both"
    profile: str

    def code(self, switch: float) -> str:
        return PROGRAM.format(when=self.when, switch=switch, operations=self.operations,
                              stdout=self.stdout, stderr=self.stderr, ending=self.ending)


PROGRAMS = st.builds(
    Hostile,
    operations=st.lists(OPERATIONS, max_size=8).map(tuple),
    stdout=st.binary(max_size=2048),
    stderr=st.binary(max_size=512),
    ending=ENDINGS,
    when=st.sampled_from(["dry", "real", "both"]),
    profile=st.sampled_from(["standard", "roomy"]),
)


@dataclass
class Arena:
    data: Path
    owner: str
    runtime: DockerRuntime
    profiles: Path
    controller: Controller[Store, ShadowedEngine] = field(init=False)  # by _open
    pause: bool = False

    def restart(self) -> list[Submission]:
        """A new controller on the same data, as after a crash: what does it reconcile?"""
        self.controller.store.close()
        self.controller = self._open()
        return self.controller.reconcile()

    def _open(self) -> Controller[Store, ShadowedEngine]:
        controller = make_controller(self.data, self.runtime, profiles_dir=self.profiles)

        def pause(submission: Submission) -> None:
            if self.pause and submission.state is State.ASSESSING:
                time.sleep(PAUSE_S)

        controller.listeners.append(pause)
        return controller


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    root = tmp_path_factory.mktemp("adversary")
    profiles = root / "profiles"
    profiles.mkdir()
    for name in ("standard", "roomy"):
        raw = yaml.safe_load((SHIPPED_ROOT / "profiles" / "standard.yaml").read_text())
        raw["name"] = name
        raw["seccomp"] = str(SHIPPED_ROOT / "profiles" / raw["seccomp"])
        raw["limits"]["wall_time_s"] = 5
        if name == "roomy":  # sizes as large as the kernel allows reach the records
            raw["limits"]["file_bytes"] = 2**63 - 1
        (profiles / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    owner = f"sandgate-adversary-{root.name[-12:]}"
    runtime = DockerRuntime(owner=owner)
    arena = Arena(root / "data", owner, runtime, profiles)
    arena.controller = arena._open()
    yield arena
    arena.controller.store.close()
    runtime.remove_owned()
    runtime.client.close()


def third_party_keys(data: Path) -> list[Key]:
    keys: list[Key] = []
    for info in KeyRing(data / "keys").public_keys():
        public = serialization.load_pem_public_key(info.pem.encode())
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.append(SSlibKey(keyid=info.key_id, keytype="ed25519", scheme="ed25519",
                             keyval={"public": raw.hex()}))
    return keys


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("CI") == "true",
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(program=PROGRAMS)
def test_no_hostile_program_breaks_the_bookkeeping(arena: Arena, program: Hostile) -> None:
    arena.pause = program.when != "both"
    switch = time.time() + PAUSE_S / 2 if arena.pause else 0.0
    result = arena.controller.submit(SubmissionRequest(
        language="python", code=program.code(switch), profile=program.profile,
        agent="adversary", workspace="arena"))

    assert result.state in TERMINAL
    event(f"{result.state.value}: {result.reason.split(':')[0]}")
    assert result.reason and "infrastructure failure" not in result.reason, result.reason
    if result.state is State.COMMITTED:
        assert result.bounded_run_diff is not None and not (
            result.bounded_run_diff.setuid_files or result.bounded_run_diff.device_nodes
            or result.bounded_run_diff.escaping_symlinks
            or result.bounded_run_diff.special_files)
    assert arena.runtime.settle()  # the ended runs' containers, removed off their path
    problems = check(Settings(data_dir=arena.data, owner=arena.owner),
                     containers=owned_containers(arena.owner))
    assert problems == []
    assert arena.restart() == []

    keys = third_party_keys(arena.data)
    envelope = arena.controller.store.receipt_for(result.id)
    assert envelope is not None
    verified = Envelope.from_dict(json.loads(envelope)).verify(keys, 1)
    assert verified
    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    assert payload["predicate"]["state"] == result.state.value
