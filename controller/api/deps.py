"""What every route depends on: the running context and the authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.signing import KeyRing
from controller.adapters.store.principals import Principals
from controller.adapters.store.submissions import Store
from controller.api.front_door import MISSING, UNKNOWN, vouched_for
from controller.api.limits import Limits, OpenStreams, RateLimiter
from controller.core import untrusted
from controller.core.lifecycle import is_terminal
from controller.core.models import Principal, Role, State, Submission
from controller.errors import AuthError, NotFoundError
from controller.service.controller import Controller
from controller.service.dispatcher import Dispatcher
from controller.settings import Settings

APPROVERS = frozenset({Role.APPROVER, Role.ADMIN})


@dataclass
class Waiters:
    """Lets request handlers await a submission's terminal state, or its next transition,
    without polling."""

    loop: asyncio.AbstractEventLoop | None = None
    events: dict[str, list[asyncio.Event]] = field(default_factory=dict)
    watchers: dict[str, set[asyncio.Event]] = field(default_factory=dict)

    def listener(self, submission: Submission) -> None:
        """Called from any thread on every announced transition."""
        if self.loop is None:
            return
        done = settled(submission)
        if done or submission.id in self.watchers:
            self.loop.call_soon_threadsafe(self._fire, submission.id, done)

    def _fire(self, submission_id: str, done: bool) -> None:
        if done:
            for event in self.events.pop(submission_id, []):
                event.set()
        for event in self.watchers.get(submission_id, ()):
            event.set()

    async def wait(self, submission_id: str, timeout: float, done: Callable[[], bool]) -> None:
        event = asyncio.Event()
        self.events.setdefault(submission_id, []).append(event)
        try:
            if not done():
                await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return
        finally:
            waiting = self.events.get(submission_id, [])
            if event in waiting:
                waiting.remove(event)

    @contextmanager
    def watching(self, submission_id: str) -> Iterator[asyncio.Event]:
        """An event set on each transition of the submission announced while it is held
        (on the event loop's thread; without a running app, never: poll as well)."""
        event = asyncio.Event()
        self.watchers.setdefault(submission_id, set()).add(event)
        try:
            yield event
        finally:
            held = self.watchers.get(submission_id, set())
            held.discard(event)
            if not held:
                self.watchers.pop(submission_id, None)


def settled(submission: Submission | None) -> bool:
    """Ended, or parked until a human answers: either way, waiting longer changes nothing."""
    return submission is not None and (is_terminal(submission.state)
                                       or submission.state is State.AWAITING_APPROVAL)


@dataclass
class ApiContext:
    controller: Controller[Store, ShadowedEngine]
    dispatcher: Dispatcher
    principals: Principals
    keyring: KeyRing
    settings: Settings
    limiter: RateLimiter
    waiters: Waiters = field(default_factory=Waiters)
    streams: OpenStreams = field(default_factory=OpenStreams)

    @cached_property
    def limits(self) -> Limits:
        """The front door's limits, from the settings fields of the same names (tests may
        assign their own before the app is made)."""
        return Limits.from_settings(self.settings)

    def check_owner(self, submission_id: str, caller: Principal) -> str:
        """The state of the caller's submission, from indexed columns only: another tenant's
        (however large its record) is 'not found' at the cost of a random id's."""
        found = self.controller.store.owner_of(submission_id)
        if found is None or not (caller.sees_everything or found[0] == caller.name):
            raise NotFoundError(f"submission {untrusted.echo(submission_id)} not found")
        return found[1]

    def own(self, submission_id: str, caller: Principal) -> Submission:
        """The caller's submission; another tenant's is 'not found', never 'forbidden'."""
        self.check_owner(submission_id, caller)
        found = self.controller.store.glance(submission_id)
        if found is None:
            raise NotFoundError(f"submission {untrusted.echo(submission_id)} not found")
        return found

    def readable(self, submission_id: str, who: Principal) -> Submission:
        """The submission, for its owner, admins and auditors, and for approvers while it is
        (or once it was) before them; 'not found' for anyone else."""
        try:
            return self.own(submission_id, who)
        except NotFoundError:
            if who.role not in APPROVERS:
                raise
        found = self.controller.store.glance(submission_id)
        if found is None or not (found.state is State.AWAITING_APPROVAL or found.approval):
            raise NotFoundError(f"submission {untrusted.echo(submission_id)} not found")
        return found


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def authenticate(ctx: ApiContext, token: str | None) -> Principal:
    """The principal holding ``token``. One the front door already authenticated (and rate
    limited) for this request is taken as it is: no second lookup, no second charge."""
    vouched = vouched_for(token)
    if vouched is not None:
        return vouched
    if not token:
        raise AuthError(MISSING)
    found = ctx.principals.authenticate(token)
    if found is None:
        raise AuthError(UNKNOWN)
    ctx.limiter.check(found.name)
    return found


bearer = HTTPBearer(auto_error=False, description="An API key from `sandgate principals add`")
Ctx = Annotated[ApiContext, Depends(context)]


def caller(ctx: Ctx,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
           ) -> Principal:
    return authenticate(ctx, credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(caller)]
