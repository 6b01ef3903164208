"""What the service reports of its work: metrics always, traces when the standard OpenTelemetry
variables ask for them (``adapters.telemetry.tracing``).

A submission is reported once, when its receipt is sealed (every terminal path seals), from
its final record and its transitions: stage durations, decisions, limits, tripwires, the
receipt; and, with a tracer, its spans. Reporting never fails a submission: it has ended by
then, and a fault here is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from controller.adapters.telemetry.metrics import Metrics
from controller.adapters.telemetry.tracing import Tracer
from controller.core.models import Submission
from controller.core.ports import SubmissionStore
from controller.core.stages import stages

log = logging.getLogger("sandgate.telemetry")


class Telemetry:
    def __init__(self, store: SubmissionStore, tracer: Tracer | None = None,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.tracer = tracer
        self.metrics = metrics or Metrics()

    def sealed(self, submission: Submission, started: datetime, ended: datetime) -> None:
        """``submission`` ended with its receipt, sealed between ``started`` and ``ended``."""
        try:
            marks = [(target, datetime.fromisoformat(at))
                     for _, _, target, at in self.store.events(submission.id)]
            found = stages(submission, marks, (started, ended))
            self.metrics.ended(submission, found)
            if self.tracer is not None:
                self.tracer.ended(submission, found)
        except Exception:
            log.exception("submission %s: its telemetry could not be written", submission.id)

    @contextmanager
    def reloading(self, kind: str) -> Iterator[None]:
        """Around a reload of ``kind`` (policies, profiles): counted by whether it loaded."""
        try:
            yield
        except Exception:
            self.metrics.reloaded(kind, ok=False)
            raise
        self.metrics.reloaded(kind, ok=True)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around a sandbox's run: counted as running meanwhile."""
        with self.metrics.sandbox_running():
            yield

    def close(self) -> None:
        """Flush what the tracer batched (the process is about to end)."""
        if self.tracer is not None:
            self.tracer.close()
