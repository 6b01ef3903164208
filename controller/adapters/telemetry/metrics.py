"""The service's metrics in Prometheus' text format (prometheus-client), on a registry of
its own (so two controllers in one process never share a count).

Base units (seconds), counters named ``_total``, and no label whose values a client chooses:
states, stages, gates, outcomes, limits, phases and profile names only. What is counted when
a submission ends (its state, stages, decisions, limits hit, tripwires) is counted once, from
its final record; what is a level now (the queue, the pools, running sandboxes) is read when
scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.core.lifecycle import TERMINAL
from controller.core.models import Gate, Limit, Outcome, Phase, Submission
from controller.core.stages import STAGES, Stage

# From a few ms (a policy decision, a seal) to the approval waits of an hour.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0, 30.0, 60.0, 300.0, 3600.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Reading:
    """One level read at scrape time: a gauge, or a counter kept elsewhere (``total``)."""

    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    total: bool = False


class _Readings(Collector):
    """Turns the readings of a callable into metric families, at each scrape."""

    def __init__(self, read: Callable[[], Iterable[Reading]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for reading in self.read():
            family = families.get(reading.name)
            if family is None:
                kind = CounterMetricFamily if reading.total else GaugeMetricFamily
                family = families[reading.name] = kind(reading.name, reading.help,
                                                       labels=sorted(reading.labels))
            family.add_metric([reading.labels[key] for key in sorted(reading.labels)],
                              reading.value)
        yield from families.values()

    def describe(self) -> Iterable[Metric]:
        return ()  # read live: nothing to describe up front


class Metrics:
    """Every metric the service exposes."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.submissions = Counter(
            "sandgate_submissions", "Submissions ended, by terminal state", ["state"],
            registry=registry)
        self.stage_seconds = Histogram(
            "sandgate_stage_duration_seconds", "Time ended submissions spent in each stage",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.decisions = Counter(
            "sandgate_decisions", "Policy decisions of ended submissions, by gate and outcome",
            ["gate", "outcome"], registry=registry)
        self.tripwires = Counter(
            "sandgate_tripwire_kills", "Runs a seccomp tripwire killed, by phase", ["phase"],
            registry=registry)
        self.limits = Counter(
            "sandgate_limits_hit", "Limits runs hit, by kind and phase", ["kind", "phase"],
            registry=registry)
        self.receipts = Counter(
            "sandgate_receipts_sealed", "Receipts signed and appended to the log",
            registry=registry)
        self.reloads = Counter(
            "sandgate_reloads", "Policy bundle and profile reloads, by what and result",
            ["kind", "result"], registry=registry)
        self.running = Gauge(
            "sandgate_sandboxes_running", "Sandboxes whose code runs now", registry=registry)
        # Every series there is, at 0, so a rate() over a first event is right.
        for state in TERMINAL:
            self.submissions.labels(state.value)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for gate in Gate:
            for outcome in Outcome:
                self.decisions.labels(gate.value, outcome.value)
        for phase in Phase:
            self.tripwires.labels(phase.value)
            for limit in Limit:
                self.limits.labels(limit.value, phase.value)
        for kind in ("policies", "profiles"):
            for result in ("ok", "failed"):
                self.reloads.labels(kind, result)

    def ended(self, submission: Submission, stages: Sequence[Stage]) -> None:
        """Count an ended submission once, from its final record."""
        self.submissions.labels(submission.state.value).inc()
        self.receipts.inc()
        for stage in stages:
            self.stage_seconds.labels(stage.name).observe(stage.seconds)
        for decision in submission.decisions:
            self.decisions.labels(decision.gate.value, decision.outcome.value).inc()
        for run in (submission.dry_run, submission.bounded_run):
            if run is None:
                continue
            if run.seccomp_killed:
                self.tripwires.labels(run.phase.value).inc()
            for limit in run.limits_hit:
                self.limits.labels(limit.value, run.phase.value).inc()

    def reloaded(self, kind: str, ok: bool) -> None:
        self.reloads.labels(kind, "ok" if ok else "failed").inc()

    @contextmanager
    def sandbox_running(self) -> Iterator[None]:
        self.running.inc()
        try:
            yield
        finally:
            self.running.dec()

    def read_at_scrape(self, read: Callable[[], Iterable[Reading]]) -> None:
        """Levels kept elsewhere (the queue, the pools), read at each scrape."""
        self.registry.register(_Readings(read))

    def exposition(self) -> bytes:
        """The text format, as ``GET /metrics`` answers it (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
