"""``GET /metrics`` (Prometheus' text format) and the agent's ``traceparent``.

``/metrics`` says how every tenant's work goes (how many submissions end how, which limits
runs hit, how full the queue is), so it takes an auditor's or an admin's key, as a bearer
token, behind the same front door as ``/v1/`` (Prometheus: ``authorization: {credentials:
<key>}`` in the scrape config).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from controller.adapters.telemetry.metrics import CONTENT_TYPE, Reading
from controller.api.deps import ApiContext, Caller, Ctx
from controller.api.openapi import answers
from controller.core.models import TraceParent
from controller.errors import ForbiddenError

METRICS = "/metrics"
MAX_TRACEPARENT = 512  # version 00 is 55 characters; later versions may add fields
router = APIRouter(tags=["operations"])
TraceParentHeader = Annotated[str | None, Header(max_length=MAX_TRACEPARENT, description=(
    "W3C Trace Context: the submission continues this trace (its trace_id is the trace's), "
    "and its spans are children of this span; a malformed one is ignored, as the "
    "specification says, and the submission gets a trace of its own"))]


@router.get(METRICS, operation_id="getMetrics", response_class=Response, responses={
    **answers(403), 200: {"description": "Prometheus text format, version 0.0.4",
                          "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(ctx: Ctx, who: Caller) -> Response:
    """The service's metrics (an auditor's or an admin's key)."""
    if not who.sees_everything:
        raise ForbiddenError(f"role {who.role} cannot read metrics (auditors and admins can)")
    return Response(ctx.controller.telemetry.metrics.exposition(), media_type=CONTENT_TYPE)


def trace_parent(header: str | None) -> TraceParent | None:
    """The span a ``traceparent`` header names, parsed by OpenTelemetry's propagator (which
    refuses what the specification refuses), or None."""
    if not header:
        return None
    context = TraceContextTextMapPropagator().extract({"traceparent": header})
    span = trace.get_current_span(context).get_span_context()
    if not span.is_valid:
        return None
    return TraceParent(trace_id=trace.format_trace_id(span.trace_id),
                       span_id=trace.format_span_id(span.span_id),
                       sampled=span.trace_flags.sampled)


def read_levels(ctx: ApiContext) -> None:
    """The queue and the pools, read at each scrape."""
    ctx.controller.telemetry.metrics.read_at_scrape(lambda: _levels(ctx))


def _levels(ctx: ApiContext) -> Iterator[Reading]:
    load = ctx.dispatcher.load()
    yield Reading("sandgate_queue_waiting", "Submissions admitted and waiting for a worker",
                  load.waiting)
    yield Reading("sandgate_queue_running", "Submissions a worker drives now", load.running)
    yield Reading("sandgate_queue_capacity", "Places in the run queue, workers included",
                  load.capacity)
    for profile, pool in ctx.controller.pool.state().items():
        labels = {"profile": profile}
        yield Reading("sandgate_pool_members", "Pooled pairs of sandboxes ready",
                      pool.ready, labels)
        yield Reading("sandgate_pool_target", "Pairs the pool keeps ready now (per language)",
                      pool.target, labels)
        yield Reading("sandgate_pool_hits", "Submissions that took a pooled pair",
                      pool.hits, labels, total=True)
        yield Reading("sandgate_pool_misses", "Submissions that found the pool exhausted "
                      "(and started their own sandboxes)", pool.misses, labels, total=True)
        yield Reading("sandgate_pool_replaced", "Pooled pairs replaced: idle past ttl_s, or "
                      "stale", pool.replaced, labels, total=True)
        yield Reading("sandgate_pool_failed_starts", "Pooled pairs that failed to start",
                      pool.failed_starts, labels, total=True)
