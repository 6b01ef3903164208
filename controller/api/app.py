"""The FastAPI application: middleware, error handlers, lifespan; routes live in ``routes``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from controller import __version__
from controller.api import errors
from controller.api.deps import ApiContext
from controller.api.limits import BodySizeLimit
from controller.api.routes import router


def create_app(ctx: ApiContext) -> FastAPI:
    """The app over a built context; starting it reconciles and starts the workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.waiters.loop = asyncio.get_running_loop()
        ctx.controller.listeners.append(ctx.waiters.listener)
        await run_in_threadpool(ctx.controller.reconcile)
        ctx.dispatcher.start()
        yield
        await run_in_threadpool(ctx.dispatcher.drain, ctx.settings.drain_timeout_s)

    app = FastAPI(title="Sandgate", version=__version__, lifespan=lifespan,
                  description="Sandboxed code execution: dry run, policy, bounded run, "
                              "validation, signed receipts.")
    app.state.ctx = ctx
    app.add_middleware(BodySizeLimit, limit=ctx.settings.max_body_bytes)
    errors.install(app)
    app.include_router(router)
    return app
