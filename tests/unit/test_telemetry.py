"""Telemetry of our own logic: stages from transitions, the attributes spans carry (never code,
output or reasons), metrics counted once per ended submission and parsed back by
prometheus-client, the agent's traceparent read by OpenTelemetry's propagator, spans written
with the submission's trace id, and nothing set, nothing exported."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.telemetry import logs
from controller.adapters.telemetry.metrics import Metrics, Reading
from controller.adapters.telemetry.tracing import Tracer, _TraceIds, sampler, wanted
from controller.api.telemetry import trace_parent
from controller.core.models import (
    Decision,
    Gate,
    Observation,
    Outcome,
    Phase,
    RuleMatch,
    State,
    StreamSummary,
    Submission,
    SubmissionRequest,
    TraceParent,
)
from controller.core.stages import stages
from controller.service.telemetry import Telemetry
from controller.settings import SHIPPED_ROOT

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CODE = "print('secret-code')"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def run(phase: Phase, *, seccomp: bool = False, exit_code: int = 0) -> Observation:
    empty = StreamSummary(size=0, sha256="0" * 64)
    return Observation(phase=phase, exit_code=exit_code, seccomp_killed=seccomp,
                       wall_time_ms=12.5, stdout=empty, stderr=empty, image_id="sha256:x")


def ended(state: State = State.COMMITTED, parent: TraceParent | None = None,
          **changes: object) -> Submission:
    request = SubmissionRequest(language="python", code=CODE, trace_parent=parent)
    decisions = (
        Decision(gate=Gate.ADMISSION, outcome=Outcome.PERMIT,
                 rules=(RuleMatch(id="submit.permit", reason="secret-reason"),)),
        Decision(gate=Gate.ASSESSMENT, outcome=Outcome.PERMIT),
        Decision(gate=Gate.UNATTENDED, outcome=Outcome.PERMIT),
        Decision(gate=Gate.VALIDATION, outcome=Outcome.PERMIT,
                 rules=(RuleMatch(id="commit.permit"),)),
    )
    fields: dict[str, object] = {
        "id": "s1", "trace_id": parent.trace_id if parent else "a" * 32, "request": request,
        "code_sha256": "0" * 64, "state": state, "created_at": at(0), "updated_at": at(90),
        "reason": "secret-reason", "decisions": decisions, "dry_run": run(Phase.DRY_RUN),
        "bounded_run": run(Phase.BOUNDED), "receipt_seq": 7, "new_version": 3,
        "stdout": "secret-output"}
    return Submission.model_validate({**fields, **changes})


MARKS = [("received", at(0)), ("dry_run", at(10)), ("assessing", at(30)),
         ("running", at(31)), ("validating", at(60)), ("committing", at(70)),
         ("committed", at(90))]


def test_stages_are_the_time_spent_in_each_state_and_sealing_apart() -> None:
    found = stages(ended(), MARKS, (at(75), at(89)))
    assert [(stage.name, stage.seconds) for stage in found] == [
        ("admission", 0.010), ("dry_run", 0.020), ("assessment", 0.001),
        ("bounded_run", 0.029), ("validation", 0.010), ("commit", 0.020), ("sealing", 0.014)]
    by_name = {stage.name: stage.attributes for stage in found}
    assert by_name["admission"]["sandgate.decision.submit.rules"] == ("submit.permit",)
    assert by_name["assessment"]["sandgate.decision.run_unattended.outcome"] == "PERMIT"
    assert by_name["bounded_run"]["process.exit.code"] == 0
    assert by_name["validation"]["sandgate.decision.commit.rules"] == ("commit.permit",)
    assert by_name["commit"]["sandgate.workspace.version"] == 3
    assert "secret" not in repr(found)  # no code, output nor reason


def test_a_denial_at_admission_has_one_stage_and_a_parked_one_its_wait() -> None:
    denied = ended(State.DENIED, dry_run=None, bounded_run=None)
    assert [s.name for s in stages(denied, [("received", at(0)), ("denied", at(5))])] == [
        "admission"]
    parked = [*MARKS[:3], ("awaiting_approval", at(31)), ("running", at(5000)),
              ("validating", at(5030)), ("committing", at(5040)), ("committed", at(5050))]
    found = {s.name: s.seconds for s in stages(ended(), parked)}
    assert found["approval_wait"] == pytest.approx(4.969)


def test_metrics_count_an_ended_submission_once_and_parse_back() -> None:
    metrics = Metrics()
    tripped = ended(State.DENIED, dry_run=run(Phase.DRY_RUN, seccomp=True, exit_code=-31),
                    bounded_run=None,
                    decisions=(Decision(gate=Gate.ASSESSMENT, outcome=Outcome.DENY),))
    metrics.ended(tripped, stages(tripped, [("received", at(0)), ("dry_run", at(10)),
                                            ("denied", at(40))]))
    metrics.ended(ended(), stages(ended(), MARKS))
    metrics.reloaded("policies", ok=False)
    metrics.read_at_scrape(lambda: [
        Reading("sandgate_queue_waiting", "waiting", 3),
        Reading("sandgate_pool_hits", "hits", 5, {"profile": "standard"}, total=True)])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode())
               for s in family.samples}
    assert samples[("sandgate_submissions_total", (("state", "denied"),))] == 1
    assert samples[("sandgate_submissions_total", (("state", "committed"),))] == 1
    assert samples[("sandgate_submissions_total", (("state", "quarantined"),))] == 0
    assert samples[("sandgate_tripwire_kills_total", (("phase", "dry_run"),))] == 1
    assert samples[("sandgate_limits_hit_total", (("kind", "seccomp_tripwire"),
                                                  ("phase", "dry_run")))] == 1
    assert samples[("sandgate_decisions_total", (("gate", "commit"),
                                                 ("outcome", "PERMIT")))] == 1
    assert samples[("sandgate_decisions_total", (("gate", "run"), ("outcome", "DENY")))] == 1
    assert samples[("sandgate_stage_duration_seconds_count", (("stage", "dry_run"),))] == 2
    assert samples[("sandgate_stage_duration_seconds_sum", (("stage", "dry_run"),))] == \
        pytest.approx(0.050)
    assert samples[("sandgate_receipts_sealed_total", ())] == 2
    assert samples[("sandgate_reloads_total", (("kind", "policies"), ("result", "failed")))] == 1
    assert samples[("sandgate_queue_waiting", ())] == 3
    assert samples[("sandgate_pool_hits_total", (("profile", "standard"),))] == 5
    # Labels of bounded sets only: nothing per submission, principal or path.
    assert {key for _, labels in samples for key, _ in labels} <= {
        "state", "stage", "gate", "outcome", "kind", "phase", "result", "profile", "le"}


@pytest.mark.parametrize(("header", "expected"), [
    (f"00-{TRACE}-{SPAN}-01", TraceParent(trace_id=TRACE, span_id=SPAN, sampled=True)),
    (f"00-{TRACE}-{SPAN}-00", TraceParent(trace_id=TRACE, span_id=SPAN, sampled=False)),
    (None, None), ("", None), ("garbage", None),
    (f"ff-{TRACE}-{SPAN}-01", None),  # version ff is invalid
    (f"00-{'0' * 32}-{SPAN}-01", None), (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"00-{TRACE[:-1]}-{SPAN}-01", None), (f"00-{TRACE}-{SPAN}-01-extra", None),
])
def test_a_traceparent_is_read_as_the_specification_says(
        header: str | None, expected: TraceParent | None) -> None:
    assert trace_parent(header) == expected


def memory_tracer() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    ids = _TraceIds()
    provider = TracerProvider(id_generator=ids, sampler=sampler({}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracer(provider, ids), exporter


def test_spans_carry_the_submissions_trace_id_under_the_agents_span() -> None:
    tracer, exporter = memory_tracer()
    parent = TraceParent(trace_id=TRACE, span_id=SPAN)
    tracer.ended(ended(parent=parent), stages(ended(), MARKS, (at(75), at(89))))
    tracer.ended(ended(), stages(ended(), MARKS))  # no traceparent: its own trace
    spans = exporter.get_finished_spans()
    first, second = spans[:8], spans[8:]
    root = next(span for span in first if span.name == "sandgate.submission")
    assert root.parent is not None and root.parent.span_id == int(SPAN, 16)
    assert {span.context.trace_id for span in first} == {int(TRACE, 16)}
    assert {span.parent.span_id for span in first if span is not root
            and span.parent is not None} == {root.context.span_id}
    assert root.start_time == int(at(0).timestamp() * 1e9)
    assert root.end_time == int(at(90).timestamp() * 1e9)
    own = next(span for span in second if span.name == "sandgate.submission")
    assert own.parent is None and own.context.trace_id == int("a" * 32, 16)
    assert "secret" not in repr([dict(span.attributes or {}) for span in spans])
    # The id generator is back to random ones for anything else.
    assert tracer.ids.generate_trace_id() != int("a" * 32, 16)


def test_nothing_set_nothing_exported() -> None:
    assert not wanted({})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                       "OTEL_SDK_DISABLED": "true"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                       "OTEL_TRACES_EXPORTER": "none"})


class BrokenStore:
    def events(self, submission_id: str, after: int = 0) -> list[tuple[int, str | None, str,
                                                                         str]]:
        raise OSError("the disk went away")


def test_a_fault_in_telemetry_is_logged_and_never_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry(BrokenStore())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="sandgate.telemetry"):
        telemetry.sealed(ended(), at(75), at(89))
    assert "could not be written" in caplog.text


def test_json_logs_name_the_submission_and_cannot_be_forged(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("json", logging.INFO)
        with logs.about("s1", TRACE):
            logging.getLogger("sandgate.test").warning(
                "bad name %s", 'x\n{"level": "forged"}\udcff')
        logging.getLogger("sandgate.test").info("outside")
    finally:
        root.handlers[:], root.level = handlers, level
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["submission_id"] == "s1" and first["trace_id"] == TRACE
    assert first["level"] == "WARNING" and first["logger"] == "sandgate.test"
    assert first["message"].startswith('bad name x\n{"level"')
    assert "submission_id" not in second and second["message"] == "outside"


def test_the_grafana_dashboard_reads_only_metrics_the_service_exposes() -> None:
    dashboard = json.loads((SHIPPED_ROOT / "docs" / "grafana" / "sandgate.json").read_text())
    asked = {re.sub(r"_(bucket|sum|count)$", "", name)
             for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"sandgate_[a-z_]+", target["expr"])}
    exposed = {family.name for family in text_string_to_metric_families(
        Metrics().exposition().decode())}
    read_at_scrape = set(re.findall(r'Reading\("(sandgate_[a-z_]+)"', (
        SHIPPED_ROOT / "controller" / "api" / "telemetry.py").read_text()))
    totals = {f"{name}_total" for name in read_at_scrape}
    assert asked and asked <= exposed | {f"{n}_total" for n in exposed} | read_at_scrape | totals


def test_an_agents_unsampled_flag_does_not_hide_its_submissions() -> None:
    tracer, exporter = memory_tracer()
    parent = TraceParent(trace_id=TRACE, span_id=SPAN, sampled=False)
    tracer.ended(ended(parent=parent), stages(ended(), MARKS))
    spans = exporter.get_finished_spans()
    assert len(spans) == 7 and all(span.context.trace_flags.sampled for span in spans)
    assert {span.context.trace_id for span in spans} == {int(TRACE, 16)}
    assert sampler({"OTEL_TRACES_SAMPLER": "traceidratio"}) is None  # the operator's own
