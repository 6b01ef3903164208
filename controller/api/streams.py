"""``GET /v1/submissions/{id}/events``: a submission's transitions as server-sent events;
``GET /v1/events``: every transition the caller may read, of every submission (the feed).

A stream ends after the terminal event; at once when the submission is already terminal and
nothing follows ``Last-Event-ID``; and after ``stream_idle_s`` without a new event (a
``: keep-alive`` comment goes out every ``KEEP_ALIVE_S`` meanwhile). A principal holds at
most ``streams_per_principal`` streams open (429 past that); a stream's place is given back
however it ends, the client's disconnect included. New events are woken by the controller's
announcements, with a slow poll behind them for anything not announced.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.types import Receive, Scope, Send

from controller.adapters.store.submissions import Store
from controller.api.deps import ApiContext, Caller, Ctx, Waiters
from controller.api.openapi import EVENT_ID, answers, event_stream
from controller.core.lifecycle import TERMINAL
from controller.core.models import Principal, Role, State, Submission
from controller.errors import InputError

KEEP_ALIVE_S = 15.0
FALLBACK_POLL_S = 1.0  # for transitions no announcement woke the stream for
EVENT_ID_SHAPE = re.compile(EVENT_ID)
TERMINAL_NAMES = frozenset(state.value for state in TERMINAL)
STREAM = ("Server-sent events: `id: <n>`, `event: transition`, `data: <a TransitionEvent as "
          "JSON>`, a blank line; `: keep-alive` comments between. Ends after the terminal "
          "state's event, or when idle")
router = APIRouter()


@router.get("/v1/submissions/{submission_id}/events", tags=["submissions"],
            operation_id="streamEvents", response_class=StreamingResponse, responses={
                **answers(404, 422), 200: {"description": "One event per transition",
                                           "content": event_stream(STREAM)}})
def events(submission_id: str, ctx: Ctx, who: Caller,
           last_event_id: Annotated[str | None, Header(description=(
               "The id of the last event received: the stream resumes after it"),
               json_schema_extra={"pattern": EVENT_ID})] = None,
           ) -> StreamingResponse:
    """Server-sent events, one per transition; ``Last-Event-ID`` resumes after that one."""
    after = resume_after(last_event_id)
    ctx.readable(submission_id, who)
    release = ctx.streams.acquire(who.name, ctx.limits.streams_per_principal)
    return EventStream(transitions(ctx.controller.store, ctx.waiters, submission_id, after,
                                   ctx.limits.stream_idle_s), release)


def resume_after(last_event_id: str | None) -> int:
    """The event id to resume after: 0 without ``Last-Event-ID``."""
    if last_event_id is None:
        return 0
    if not EVENT_ID_SHAPE.fullmatch(last_event_id):
        raise InputError("Last-Event-ID must be an event id this stream sent: 1 to 18 "
                         "digits (0-9)")
    return int(last_event_id)


class EventStream(StreamingResponse):
    """A streaming response that gives its stream's place back when it ends, however."""

    def __init__(self, content: AsyncGenerator[str, None], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._content = content
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            await self._content.aclose()


async def transitions(store: Store, waiters: Waiters, submission_id: str, after: int,
                      idle_s: float) -> AsyncGenerator[str, None]:
    """Each transition after event ``after`` as an SSE event (id = transition id)."""
    idle_until = anyio.current_time() + idle_s
    keep_alive_at = anyio.current_time() + KEEP_ALIVE_S
    with waiters.watching(submission_id) as changed:
        while True:
            changed.clear()
            state, rows = await anyio.to_thread.run_sync(_poll, store, submission_id, after)
            for event_id, source, target, at in rows:
                after = event_id
                data = json.dumps({"from": source, "to": target, "at": at})
                yield f"id: {event_id}\nevent: transition\ndata: {data}\n\n"
                if target in TERMINAL_NAMES:
                    return
            now = anyio.current_time()
            if rows:
                idle_until = now + idle_s
            elif state is None or state in TERMINAL_NAMES or now >= idle_until:
                return  # gone, ended with nothing more to say, or idle too long
            if now >= keep_alive_at:
                yield ": keep-alive\n\n"
                keep_alive_at = now + KEEP_ALIVE_S
            with anyio.move_on_after(min(FALLBACK_POLL_S, idle_until - now,
                                         keep_alive_at - now)):
                await changed.wait()


def _poll(store: Store, submission_id: str,
          after: int) -> tuple[str | None, list[tuple[int, str | None, str, str]]]:
    """(state, transitions after ``after``): the state read first, so a terminal state with
    no transition after it means there is truly nothing more."""
    owner = store.owner_of(submission_id)
    return (owner[1] if owner else None), store.events(submission_id, after)


# The feed: every transition the caller may read -------------------------------------------

FEED_PAGE = 200  # events read per query; the stream carries on at once while more wait
FEED_QUERIES = 4  # the feeds' store queries in flight at once, apart from the handlers' limit
FEED_FALLBACK_POLL_S = 5.0  # every transition is announced; the poll is a safety net
MAX_FEED_S = 3600.0  # then the stream ends, and the client resumes with Last-Event-ID
FEED = ("Server-sent events: first `event: ready` (its `id` the point the stream starts "
        "after, its `data` the caller's name, role and what it sees), then one `event: "
        "transition` per transition (`data`: a FeedEvent as JSON); `: keep-alive` comments "
        "between. Without Last-Event-ID it starts at the newest transition: read "
        "GET /v1/submissions after the ready event and nothing is missed. Ends when idle")
STATE_NAMES: list[JsonValue] = [state.value for state in State]


class FeedEvent(BaseModel):
    """The ``data`` of a ``transition`` event of GET /v1/events."""

    model_config = ConfigDict(populate_by_name=True)

    submission_id: str
    agent: str
    workspace: str
    source: str | None = Field(alias="from", description="None for the first event",
                               json_schema_extra={"enum": [*STATE_NAMES, None]})
    to: str = Field(json_schema_extra={"enum": STATE_NAMES})
    at: str = Field(description="When, ISO 8601 in UTC")


class FeedReady(BaseModel):
    """The ``data`` of the ``ready`` event that opens GET /v1/events."""

    principal: str
    role: Literal["agent", "approver", "admin", "auditor"]
    sees: Literal["own", "parked", "all"] = Field(description=(
        "own: the caller's submissions; parked: every submission from its parking for "
        "approval on; all: every submission"))


def _feed_stream() -> dict[str, Any]:
    data = {"oneOf": [FeedEvent.model_json_schema(by_alias=True),
                      FeedReady.model_json_schema()]}
    return {"text/event-stream": {"itemSchema": {
        "description": FEED, "type": "object", "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": EVENT_ID, "description": (
                "The transition's id: send it back as Last-Event-ID to resume after it")},
            "event": {"type": "string", "enum": ["ready", "transition"]},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data}}}}}


class Announcements:
    """Wakes the open feeds that may see a transition the controller announces (from any
    thread): an agent's feed only for its own submissions, so one tenant's feeds cost
    nothing when others' submissions move. One per app, registered as a listener when the
    first feed opens; the feeds' queries count against a limit of their own (``queries``),
    never against the one request handlers share."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[asyncio.Event, str | None] = {}  # each feed's agent, None: any
        self.queries = anyio.CapacityLimiter(FEED_QUERIES)

    def listener(self, submission: Submission) -> None:
        if not self.waiting:
            return
        try:
            self.loop.call_soon_threadsafe(self._wake, submission.request.agent)
        except RuntimeError:  # the loop has closed (shutting down): no feed is left to wake
            return

    def _wake(self, agent: str) -> None:
        for event, only in self.waiting.items():
            if only is None or only == agent:
                event.set()

    @contextmanager
    def watching(self, agent: str | None) -> Iterator[asyncio.Event]:
        """An event set when a submission of ``agent`` (of anyone: None) moves."""
        event = asyncio.Event()
        self.waiting[event] = agent
        try:
            yield event
        finally:
            self.waiting.pop(event, None)


def announcements(request: Request, ctx: ApiContext) -> Announcements:
    """This app's ``Announcements``, made (and listening) on first use."""
    found: Announcements | None = getattr(request.app.state, "feed_announcements", None)
    if found is None:
        found = Announcements(asyncio.get_running_loop())
        request.app.state.feed_announcements = found
        ctx.controller.listeners.append(found.listener)
    return found


def sees(who: Principal) -> Literal["own", "parked", "all"]:
    """What the feed shows ``who``, as the routes read records: agents their own, approvers
    what was put before them, admins and auditors everything."""
    if who.sees_everything:
        return "all"
    return "parked" if who.role is Role.APPROVER else "own"


@router.get("/v1/events", tags=["submissions"], operation_id="streamFeed",
            response_class=StreamingResponse, responses={
                **answers(422), 200: {"description": "A ready event, then one event per "
                                                     "transition", "content": _feed_stream()}})
async def feed(request: Request, ctx: Ctx, who: Caller,
               last_event_id: Annotated[str | None, Header(description=(
                   "The id of the last event received: the stream resumes after it"),
                   json_schema_extra={"pattern": EVENT_ID})] = None,
               ) -> StreamingResponse:
    """Every transition the caller may read, of every submission, as server-sent events:
    agents see their own, approvers submissions from their parking for approval on, admins
    and auditors all; ``Last-Event-ID`` resumes after that one."""
    after = resume_after(last_event_id)
    hub = announcements(request, ctx)
    release = ctx.streams.acquire(who.name, ctx.limits.streams_per_principal)
    scope = sees(who)
    ready = FeedReady(principal=who.name, role=who.role.value, sees=scope).model_dump_json()

    def still(caller: Principal = who) -> bool:
        found = ctx.principals.active(caller.name)
        return found is not None and found.role is caller.role

    return EventStream(feed_events(ctx.controller.store, hub, who, after if last_event_id
                                   is not None else None, ctx.limits.stream_idle_s, ready,
                                   still=still, recheck_s=max(1.0, ctx.limits.auth_cache_s)),
                       release)


async def feed_events(store: Store, hub: Announcements, who: Principal, after: int | None,
                      idle_s: float, ready: str, *, still: Callable[[], bool],
                      recheck_s: float) -> AsyncGenerator[str, None]:
    """The ready event, then each transition ``who`` may read after event ``after`` (the
    newest when None, or when ``after`` names one not yet written). Ends when idle, after
    ``MAX_FEED_S`` (the client resumes with Last-Event-ID), or once ``still`` says the
    caller's key was revoked or its role changed (asked every ``recheck_s``: a revocation
    ends a busy feed as soon as it ends the key's requests)."""
    scope = sees(who)
    agent = who.name if scope == "own" else None
    parked = scope == "parked"
    _, _, head = await anyio.to_thread.run_sync(_newest, store, limiter=hub.queries)
    cursor = head if after is None else min(after, head)
    yield f"id: {cursor}\nevent: ready\ndata: {ready}\n\n"
    started = anyio.current_time()
    idle_until = started + idle_s
    keep_alive_at = started + KEEP_ALIVE_S
    checked_at = started
    with hub.watching(agent) as changed:
        while True:
            changed.clear()
            now = anyio.current_time()
            if now - started >= MAX_FEED_S:
                return
            if now - checked_at >= recheck_s:
                if not await anyio.to_thread.run_sync(still, limiter=hub.queries):
                    return
                checked_at = now
            rows, cursor, head = await anyio.to_thread.run_sync(
                partial(store.feed, cursor, agent=agent, parked_only=parked, limit=FEED_PAGE),
                limiter=hub.queries)
            for event_id, sid, owner, workspace, source, target, at in rows:
                data = FeedEvent(submission_id=sid, agent=owner, workspace=workspace,
                                 source=source, to=target, at=at).model_dump_json(by_alias=True)
                yield f"id: {event_id}\nevent: transition\ndata: {data}\n\n"
            now = anyio.current_time()
            if rows:
                idle_until = now + idle_s
            elif now >= idle_until:
                return
            if now >= keep_alive_at:
                yield ": keep-alive\n\n"
                keep_alive_at = now + KEEP_ALIVE_S
            if cursor < head:
                continue  # more written than one read covers: no wait
            with anyio.move_on_after(min(FEED_FALLBACK_POLL_S, idle_until - now,
                                         keep_alive_at - now, recheck_s)):
                await changed.wait()


def _newest(store: Store) -> tuple[list[Any], int, int]:
    """The feed's head (the newest event id), reading no event."""
    return store.feed(0, agent=None, limit=1, window=0)
