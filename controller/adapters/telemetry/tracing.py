"""Each ended submission as an OpenTelemetry trace, exported over OTLP/HTTP.

Configured only by the standard variables: with neither ``OTEL_EXPORTER_OTLP_ENDPOINT`` nor
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set (or with ``OTEL_SDK_DISABLED=true``, or
``OTEL_TRACES_EXPORTER=none``), there is no tracer and nothing is done. The exporter reads the
rest itself (headers, timeout, compression), and ``OTEL_SERVICE_NAME`` names the service
(``sandgate`` unless set).

Every submission is traced unless ``OTEL_TRACES_SAMPLER`` says otherwise: an agent's
unsampled ``traceparent`` does not hide its work. Its trace id is the agent's to choose (that
is what continuing a trace means), so a tenant may put its spans in another's trace: each
submission's span names its agent (``sandgate.agent``).

A submission's spans are written when it ends, from its record and its transitions: one span
for the submission (its trace id is the record's ``trace_id``; its parent the agent's span
when the request carried a ``traceparent``) and one per stage under it. A submission's life
can span restarts and approval waits of hours; written at its end, its trace is whole
whichever process ended it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from controller.core.models import State, Submission
from controller.core.stages import Stage, submission_attributes

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
FAILED = {State.ROLLED_BACK, State.QUARANTINED, State.DENIED}


def wanted(env: dict[str, str] | None = None) -> bool:
    """Whether the standard variables ask for traces to be exported."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINTS)


def sampler(env: dict[str, str] | None = None) -> Sampler | None:
    """The operator's sampler (``OTEL_TRACES_SAMPLER``: None, the SDK reads it), else every
    submission, whatever the agent's ``traceparent`` says: a tenant does not decide what
    the operator's traces show (its unsampled flag would hide its submissions)."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    return ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)


class _TraceIds(RandomIdGenerator):
    """Random ids, except a root span's trace id when one is set for this thread: the
    submission's own, recorded when it was received."""

    def __init__(self) -> None:
        self.pending = threading.local()

    def generate_trace_id(self) -> int:
        wanted_id: int | None = getattr(self.pending, "trace_id", None)
        return wanted_id if wanted_id else super().generate_trace_id()


class Tracer:
    """Writes ended submissions as traces; ``close`` flushes what is batched."""

    def __init__(self, provider: TracerProvider, ids: _TraceIds) -> None:
        self.provider = provider
        self.ids = ids
        self.tracer = provider.get_tracer("sandgate")

    @classmethod
    def from_env(cls) -> Tracer | None:
        """An OTLP/HTTP tracer if the standard variables ask for one, else None."""
        if not wanted():
            return None
        ids = _TraceIds()
        service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or "sandgate"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}),
                                  id_generator=ids, sampler=sampler())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider, ids)

    def ended(self, submission: Submission, stages: Sequence[Stage]) -> None:
        parent = submission.request.trace_parent
        context = None
        if parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
                trace_id=int(parent.trace_id, 16), span_id=int(parent.span_id, 16),
                is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.sampled
                                                       else TraceFlags.DEFAULT))))
        self.ids.pending.trace_id = int(submission.trace_id, 16)
        try:
            root = self.tracer.start_span(
                "sandgate.submission", context=context, kind=SpanKind.INTERNAL,
                start_time=_ns(submission.created_at),
                attributes=dict(submission_attributes(submission)))
        finally:
            self.ids.pending.trace_id = None
        if submission.state in FAILED:
            root.set_status(trace.Status(trace.StatusCode.ERROR, submission.state.value))
        under = trace.set_span_in_context(root)
        for stage in stages:
            span = self.tracer.start_span(f"sandgate.{stage.name}", context=under,
                                          start_time=_ns(stage.start),
                                          attributes=dict(stage.attributes))
            span.end(end_time=_ns(stage.end))
        last = max((stage.end for stage in stages), default=submission.updated_at)
        root.end(end_time=_ns(max(last, submission.updated_at)))

    def close(self) -> None:
        self.provider.shutdown()  # flushes the batch


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)

