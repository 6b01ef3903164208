"""The FastAPI application: middleware, error handlers, lifespan; routes live in ``routes``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.types import Scope

from controller import __version__
from controller.api import errors, openapi, operations, streams, telemetry
from controller.api.deps import ApiContext
from controller.api.front_door import FrontDoor, route_path
from controller.api.limits import BodySizeLimit
from controller.api.routes import HOLD, SUBMISSIONS, SUBMITTERS, router
from controller.console import router as console
from controller.core.models import Principal
from controller.service.reloader import watch


def create_app(ctx: ApiContext) -> FastAPI:
    """The app over a built context; starting it reconciles and starts the workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.waiters.loop = asyncio.get_running_loop()
        ctx.controller.listeners.append(ctx.waiters.listener)
        await run_in_threadpool(ctx.controller.reconcile)
        ctx.controller.pool.start()
        ctx.dispatcher.start()
        stop = threading.Event()
        if ctx.settings.policy_watch_s > 0:
            threading.Thread(target=watch, daemon=True, name="sandgate-reload",
                             args=(ctx.controller, ctx.settings.profiles_dir,
                                   ctx.settings.bundles_dir, ctx.settings.policy_watch_s,
                                   stop)).start()
        yield
        stop.set()
        await run_in_threadpool(ctx.dispatcher.drain, ctx.settings.drain_timeout_s)
        await run_in_threadpool(ctx.controller.pool.close)
        await run_in_threadpool(ctx.controller.telemetry.close)

    app = FastAPI(title="Sandgate", version=__version__, lifespan=lifespan,
                  description="Sandboxed code execution: dry run, policy, bounded run, "
                              "validation, signed receipts. Every error is an ErrorBody "
                              "(`{\"error\": {\"code\", \"message\"}}`): branch on its code.",
                  openapi_tags=openapi.TAGS)
    app.state.ctx = ctx
    # The last added runs first: identity from the headers, before anything reads a body.
    app.add_middleware(BodySizeLimit, limit=ctx.settings.max_body_bytes)
    app.add_middleware(FrontDoor, authenticate=lambda key: ctx.principals.authenticate(key),
                       limiter=ctx.limiter, limits=ctx.limits,
                       admit=lambda scope, who: _hold(ctx, scope, who))
    errors.install(app)
    openapi.install(app)
    app.include_router(streams.router)
    app.include_router(operations.router)
    app.include_router(telemetry.router)
    telemetry.read_levels(ctx)
    app.include_router(router)
    app.include_router(console)
    return app


def _hold(ctx: ApiContext, scope: Scope, who: Principal) -> Callable[[], None] | None:
    """A submission's place in the run queue is taken from its request's head, or it is
    refused there (429 or 503, as ``submit`` would), before its body is parsed or a thread
    is taken for it. The route hands the hold to ``submit``; what lets it go once the
    request is answered (nothing if ``submit`` used it)."""
    if (scope["method"] != "POST" or route_path(scope) != SUBMISSIONS
            or who.role not in SUBMITTERS):
        return None
    if any(name == b"idempotency-key" for name, _ in scope["headers"]):
        # Retries of one submission, in flight together, must not each count as a place:
        # judged, not held (submit takes its place, once for all of them).
        ctx.dispatcher.refuse_early(who.name, (who.max_running, who.max_queued))
        return None
    hold = ctx.dispatcher.hold(who.name, (who.max_running, who.max_queued))
    scope.setdefault("state", {})[HOLD] = hold
    return lambda: ctx.dispatcher.let_go(hold)
