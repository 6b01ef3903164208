"""What every route depends on: the running context and the authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from controller.api.limits import RateLimiter
from controller.dispatcher import Dispatcher
from controller.errors import AuthError, NotFoundError
from controller.lifecycle import is_terminal
from controller.models import Principal, State, Submission
from controller.principals import Principals
from controller.service import Controller
from controller.settings import Settings
from controller.signing import KeyRing


@dataclass
class Waiters:
    """Lets request handlers await a submission's terminal state without polling."""

    loop: asyncio.AbstractEventLoop | None = None
    events: dict[str, list[asyncio.Event]] = field(default_factory=dict)

    def listener(self, submission: Submission) -> None:
        if settled(submission) and self.loop is not None:
            self.loop.call_soon_threadsafe(self._fire, submission.id)

    def _fire(self, submission_id: str) -> None:
        for event in self.events.pop(submission_id, []):
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


def settled(submission: Submission | None) -> bool:
    """Ended, or parked until a human answers: either way, waiting longer changes nothing."""
    return submission is not None and (is_terminal(submission.state)
                                       or submission.state is State.AWAITING_APPROVAL)


@dataclass
class ApiContext:
    controller: Controller
    dispatcher: Dispatcher
    principals: Principals
    keyring: KeyRing
    settings: Settings
    limiter: RateLimiter
    waiters: Waiters = field(default_factory=Waiters)

    def own(self, submission_id: str, caller: Principal) -> Submission:
        """The caller's submission; another tenant's is 'not found', never 'forbidden'."""
        found = self.controller.store.get(submission_id)
        if found is None or not (caller.sees_everything or found.request.agent == caller.name):
            raise NotFoundError(f"submission {submission_id!r} not found")
        return found


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def authenticate(ctx: ApiContext, token: str | None) -> Principal:
    if not token:
        raise AuthError("missing 'Authorization: Bearer <key>'")
    found = ctx.principals.authenticate(token)
    if found is None:
        raise AuthError("unknown or revoked API key")
    ctx.limiter.check(found.name)
    return found
