"""``GET /v1/submissions/{id}/events``: a submission's transitions as server-sent events.

A stream ends after the terminal event; at once when the submission is already terminal and
nothing follows ``Last-Event-ID``; and after ``stream_idle_s`` without a new event (a
``: keep-alive`` comment goes out every ``KEEP_ALIVE_S`` meanwhile). A principal holds at
most ``streams_per_principal`` streams open (429 past that); a stream's place is given back
however it ends, the client's disconnect included. New events are woken by the controller's
announcements, with a slow poll behind them for anything not announced.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Callable
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from controller.adapters.store.submissions import Store
from controller.api.deps import Caller, Ctx, Waiters
from controller.api.openapi import EVENT_ID, answers, event_stream
from controller.core.lifecycle import TERMINAL
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
