"""``/healthz`` and ``/readyz``: for orchestrators, so unauthenticated, and saying nothing a
stranger could use. A failing readiness probe answers a fixed message per check; what went
wrong is logged here, never sent."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller import __version__
from controller.api.deps import ApiContext, Ctx
from controller.api.openapi import answers
from controller.api.schemas import Health, Readiness
from controller.core.models import AuditSource
from controller.errors import NotFoundError

log = logging.getLogger("sandgate.api")
UNAUDITED = ("no kernel audit source is readable (neither the audit netlink group nor "
             "/dev/kmsg): child tripwires cannot be seen, and every run is refused (no profile "
             "sets accept_unaudited)")
# What a failing check answers, whatever the exception said.
FAILED = {
    "docker": "the container engine does not answer",
    "store": "the database cannot be read",
    "signing_key": "no usable signing key",
    "policy_bundle": "no policy bundle loaded",
    "accepting": "draining",
    "kernel_audit": UNAUDITED,
}
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, operation_id="getHealth",
            responses=answers(public=True))
def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/readyz", response_model=Readiness, operation_id="getReadiness", responses={
    **answers(public=True), 503: {"model": Readiness, "description": "Not ready: the "
                                  "failing checks say what is wrong (not why: that is logged)"}})
def readyz(ctx: Ctx) -> JSONResponse:
    checks = readiness(ctx)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(Readiness(ready=ready, checks=checks).model_dump(),
                        status_code=200 if ready else 503)


def readiness(ctx: ApiContext) -> dict[str, str]:
    """Each check: "ok", or its fixed message (the cause is logged)."""
    probes: dict[str, Callable[[], object]] = {
        "docker": ctx.controller.runtime.ping,
        "store": ctx.controller.store.check_readable,
        "signing_key": lambda: ctx.keyring.signer(create=False),
        "policy_bundle": lambda: _require(ctx.controller.engine.bundle is not None,
                                          FAILED["policy_bundle"]),
        "accepting": lambda: _require(not ctx.dispatcher.draining, FAILED["accepting"]),
        "kernel_audit": lambda: _audited(ctx),
    }
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready", never a 500
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = FAILED[name]
    return checks


def _audited(ctx: ApiContext) -> None:
    """Without a kernel audit source a child's tripwire goes unseen: not ready, unless some
    loaded profile accepts that (its runs are the only ones that will be let through)."""
    if ctx.controller.runtime.audit_source() is not AuditSource.NONE:
        return
    accepting = [name for name, profile in ctx.controller.profiles.items()
                 if profile.accept_unaudited]
    _require(bool(accepting), UNAUDITED)


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise NotFoundError(problem)
