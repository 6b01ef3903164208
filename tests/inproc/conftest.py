"""The real API in process: httpx's ``ASGITransport`` over ``create_app``, wired as
``bootstrap.open_api`` wires it, with the fake runtime in place of Docker (no engine is
needed), a SQLite store, signing keys and principals in ``tmp_path``, and the shipped Cedar
bundle (or a copy with one rule more).

``ASGITransport`` runs no lifespan events, so the app's own lifespan context is entered
around each test: reconciliation, the dispatcher's workers and its approval sweeper start as
they do under uvicorn, and the drain at its end stops them; the harness then checks that no
thread it started is left.

The fake runtime's behaviour is read from the submitted code (``Script``), so a test says
what a run does by what it submits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from controller.adapters.runtime.fake import FakeRuntime, Outcome
from controller.adapters.signing import KeyRing
from controller.adapters.store.principals import Principals
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.limits import RateLimiter
from controller.core.lifecycle import TERMINAL
from controller.core.models import Phase, Role
from controller.core.ports import RunSpec
from controller.service.dispatcher import Dispatcher
from controller.settings import Settings
from tests.conftest import bundle_with, make_controller, parking_rule

BASE_URL = "http://sandgate.test"
# Every principal of a harness; "revoked" is revoked before the app starts.
ROLES: dict[str, Role] = {
    "alice": Role.AGENT,
    "bob": Role.AGENT,
    "carol": Role.APPROVER,
    "root": Role.ADMIN,
    "audrey": Role.AUDITOR,
    "revoked": Role.AGENT,
}
ENDED = frozenset(state.value for state in TERMINAL)
SETTLED = ENDED | {"awaiting_approval"}
PARKING_OVER = 3  # the parking bundle parks a dry run that created more files than this
DEADLINE_S = 10.0  # for anything a test waits for
POLL_S = 0.01
# A clean run's path through the lifecycle, written out here (not read from the lifecycle).
COMMITTED_PATH = ["received", "dry_run", "assessing", "running", "validating", "committing",
                  "committed"]
# What a harness runs with unless a test says otherwise: limits no ordinary test reaches.
DEFAULTS: dict[str, Any] = {
    "policy_watch_s": 0,
    "workers": 2,
    "queue_size": 8,
    "rate_per_s": 1000.0,
    "rate_burst": 1000,
    "max_body_bytes": 64 * 1024,
    "drain_timeout_s": DEADLINE_S,
    "stream_idle_s": 30.0,
    "auth_failures_per_min": 1000.0,
}


@dataclass
class Script:
    """The fake runtime's behaviour, from the submitted code's first word:

    - ``create N``: the run creates files ``n0`` .. ``n<N-1>`` in the workspace;
    - ``fail``: the real run exits 1 (rolled back), the dry run succeeds;
    - ``block``: the dry run sets ``started`` and waits for ``gate`` (at most 30 s), then
      writes as below;
    - anything else: the run writes ``out.txt`` holding the code.

    Every run's stdout is ``ran: `` and the code.
    """

    started: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def __call__(self, spec: RunSpec) -> Outcome:
        code = "".join(path.read_text() for path in sorted(spec.code_dir.iterdir())
                       if path.is_file())
        word, _, rest = code.partition(" ")
        if word == "create":
            for n in range(int(rest)):
                (spec.workspace_dir / f"n{n}").write_text(f"{n}\n")
        else:
            if word == "block" and spec.phase is Phase.DRY_RUN:
                self.started.set()
                self.gate.wait(30)
            (spec.workspace_dir / "out.txt").write_text(code)  # in both runs: no divergence
        failed = word == "fail" and spec.phase is Phase.BOUNDED
        return Outcome(exit_code=1 if failed else 0, stdout=b"ran: " + code.encode())


@dataclass
class Api:
    """One running app and a client for it; requests name the principal they act as."""

    app: FastAPI
    ctx: ApiContext
    runtime: FakeRuntime
    script: Script
    http: httpx.AsyncClient
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def request(self, who: str | None, method: str, path: str,
                      **kwargs: Any) -> httpx.Response:
        """``method path`` as ``who`` (None: without credentials)."""
        headers = {**(self.auth(who) if who else {}), **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, who: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(who, "GET", path, **kwargs)

    async def post(self, who: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request(who, "POST", path, **kwargs)

    async def submit(self, who: str, code: str, *, wait: float = DEADLINE_S,
                     headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        """Submit python ``code`` and wait (on the server) until it ends or parks."""
        answer = await self.post(who, "/v1/submissions", params={"wait": wait},
                                 headers=headers or {},
                                 json={"language": "python", "code": code, **fields})
        assert answer.status_code == 202, answer.text
        found: dict[str, Any] = answer.json()
        assert found["state"] in SETTLED or wait == 0, found
        return found

    async def settle(self, who: str, submission_id: str,
                     states: frozenset[str] = ENDED) -> dict[str, Any]:
        """The submission once its state is one of ``states`` (polled, with a deadline)."""
        with anyio.fail_after(DEADLINE_S):
            while True:
                answer = await self.get(who, f"/v1/submissions/{submission_id}")
                assert answer.status_code == 200, answer.text
                found: dict[str, Any] = answer.json()
                if found["state"] in states:
                    return found
                await anyio.sleep(POLL_S)

    def held_streams(self, who: str) -> int:
        return self.ctx.streams.held(who)


def add_principals(principals: Principals) -> dict[str, str]:
    keys = {name: principals.add(name, role) for name, role in ROLES.items()}
    principals.revoke("revoked")
    return keys


def context_for(data: Path, runtime: FakeRuntime, policy_dir: Path | None,
                overrides: dict[str, Any]) -> tuple[ApiContext, dict[str, str]]:
    """The context ``bootstrap.open_api`` builds, over the fake runtime."""
    values: dict[str, Any] = {"data_dir": data, **DEFAULTS, **overrides}
    if policy_dir is not None:
        values["policy_dir"] = policy_dir  # what a reload reads
    settings = Settings(**values)
    controller = make_controller(data, runtime, policy_dir=policy_dir,
                                 max_parked=settings.max_parked_per_principal)
    principals = Principals(settings.db_path)
    keys = add_principals(principals)
    dispatcher = Dispatcher(controller, workers=settings.workers,
                            queue_size=settings.queue_size,
                            approval_ttl_s=settings.approval_ttl_s,
                            max_running=settings.max_running_per_principal,
                            max_queued=settings.max_queued_per_principal,
                            quota_of=principals.quota)
    ctx = ApiContext(controller=controller, dispatcher=dispatcher, principals=principals,
                     keyring=KeyRing(settings.keys_dir), settings=settings,
                     limiter=RateLimiter(settings.rate_per_s, settings.rate_burst))
    return ctx, keys


@contextmanager
def no_threads_left_behind() -> Iterator[None]:
    """Every controller thread started inside (workers, sweeper, reloader) has ended after."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + DEADLINE_S
    while True:
        left = [t.name for t in threading.enumerate()
                if t not in before and t.name.startswith("sandgate-") and t.is_alive()]
        if not left:
            return
        assert time.monotonic() < deadline, f"threads left running: {left}"
        time.sleep(POLL_S)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from this process's mountinfo)."""
    inside = str(root.resolve())
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [point for point in points if point == inside or point.startswith(inside + "/")]


@asynccontextmanager
async def running_api(tmp_path: Path, *, policy_dir: Path | None = None,
                      **settings: Any) -> AsyncIterator[Api]:
    """A started app on a fresh data directory; ``settings`` override ``DEFAULTS``."""
    script = Script()
    runtime = FakeRuntime(behaviour=script)
    ctx, keys = context_for(tmp_path / "data", runtime, policy_dir, settings)
    app = create_app(ctx)
    try:
        with no_threads_left_behind():
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
                try:
                    yield Api(app=app, ctx=ctx, runtime=runtime, script=script, http=http,
                              keys=keys)
                finally:
                    script.gate.set()  # a blocked run ends, so the drain can finish
    finally:
        ctx.principals.close()
        ctx.controller.store.close()
    assert mounts_under(tmp_path) == [], "a scratch filesystem was left mounted"


def parking_bundle(tmp_path: Path) -> Path:
    """The shipped bundle plus a rule parking a dry run that created over 3 files."""
    return bundle_with(tmp_path, "parking-bundle", parking_rule(PARKING_OVER))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The app on the shipped default bundle."""
    async with running_api(tmp_path) as running:
        yield running


@pytest.fixture
async def parking(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The app on a bundle that parks ``create 4`` (and more) for a human's approval."""
    async with running_api(tmp_path, policy_dir=parking_bundle(tmp_path)) as running:
        yield running


def sse_events(body: str) -> list[dict[str, str]]:
    """The events of a ``text/event-stream`` body, strictly parsed: each event a block of
    ``field: value`` lines ending in a blank line; comment lines (``:``) are skipped."""
    assert body == "" or body.endswith("\n\n"), f"unterminated event: {body[-80:]!r}"
    events = []
    for block in body.split("\n\n")[:-1]:
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, sep, value = line.partition(": ")
            assert sep and name in {"id", "event", "data"} and name not in event, line
            event[name] = value
        if event:
            events.append(event)
    return events
