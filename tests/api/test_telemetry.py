"""Traces and metrics of the real service: OTLP/HTTP spans received by a local receiver (the
agent's trace continued, a span per stage, the receipt carrying the same trace id), and
``/metrics`` parsed by prometheus-client's own parser, counting a tripwire kill."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Server, make_server
from tests.conftest import owned_containers

pytestmark = pytest.mark.docker
AGENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"
SECRET_CODE = "print('the-code-is-' + 'private')"
TRIPWIRE = "import ctypes\nctypes.CDLL(None).ptrace(0, 0, 0, 0)"


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: every span posted to ``/v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.changed:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            receiver.spans.extend(scope.spans)
                    receiver.changed.notify_all()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def of_trace(self, trace_id: str, at_least: int, timeout: float = 30) -> list[Span]:
        def found() -> list[Span]:
            return [span for span in self.spans if span.trace_id.hex() == trace_id]
        with self.changed:
            self.changed.wait_for(lambda: len(found()) >= at_least, timeout)
            return found()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def attributes(span: Span) -> dict[str, object]:
    return {kv.key: _value(kv) for kv in span.attributes}


def _value(kv: KeyValue) -> object:
    which = kv.value.WhichOneof("value")
    if which == "array_value":
        return [item.string_value for item in kv.value.array_value.values]
    return getattr(kv.value, which) if which else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    server = make_server(tmp_path_factory.mktemp("telemetry"), "traced", policy_watch_s="0")
    server.env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                       "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "sandgate-test"})
    for name, role in (("alice", "agent"), ("audrey", "auditor"), ("root", "admin")):
        server.principal(name, role)
    server.start()
    yield server
    server.stop()
    assert owned_containers(server.owner) == []


def test_the_agents_trace_is_continued_with_a_span_per_stage(
        traced: Server, receiver: Receiver) -> None:
    with traced.client("alice") as alice:
        answer = alice.post("/v1/submissions", params={"wait": 30},
                            headers={"traceparent": f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"},
                            json={"language": "python", "code": SECRET_CODE})
        assert answer.status_code == 202, answer.text
        done = answer.json()
        assert done["state"] == "committed", done
        receipt = alice.get(f"/v1/receipts/{done['id']}").json()
    statement = json.loads(base64.b64decode(receipt["payload"]))
    assert statement["predicate"]["trace_id"] == AGENT_TRACE

    spans = receiver.of_trace(AGENT_TRACE, at_least=7)
    by_name = {span.name: span for span in spans}
    root = by_name["sandgate.submission"]
    assert root.parent_span_id.hex() == AGENT_SPAN
    assert attributes(root)["sandgate.submission.id"] == done["id"]
    assert attributes(root)["sandgate.state"] == "committed"
    stages = [span for span in spans if span is not root]
    assert {span.parent_span_id for span in stages} == {root.span_id}
    assert {"sandgate.admission", "sandgate.dry_run", "sandgate.assessment",
            "sandgate.bounded_run", "sandgate.validation", "sandgate.commit",
            "sandgate.sealing"} <= set(by_name)
    bounded = attributes(by_name["sandgate.bounded_run"])
    assert bounded["process.exit.code"] == 0 and bounded["sandgate.limits_hit"] == []
    assert attributes(by_name["sandgate.assessment"])["sandgate.decision.run.outcome"] == \
        "PERMIT"
    for span in spans:  # ordered, inside the submission's span
        assert root.start_time_unix_nano <= span.start_time_unix_nano
        assert span.start_time_unix_nano <= span.end_time_unix_nano <= root.end_time_unix_nano
        assert "private" not in str(attributes(span)), span.name  # never code nor output


def test_without_a_traceparent_the_submission_has_a_trace_of_its_own(
        traced: Server, receiver: Receiver) -> None:
    with traced.client("alice") as alice:
        for header in ({}, {"traceparent": "00-" + "0" * 32 + "-" + AGENT_SPAN + "-01"},
                       {"traceparent": "not a trace"}):
            done = alice.post("/v1/submissions", params={"wait": 30}, headers=header,
                              json={"language": "python", "code": "print(2)"}).json()
            assert done["state"] == "committed" and done["trace_id"] != AGENT_TRACE
            root = [span for span in receiver.of_trace(done["trace_id"], at_least=7)
                    if span.name == "sandgate.submission"]
            assert len(root) == 1 and root[0].parent_span_id == b""


def test_metrics_count_a_tripwire_kill_for_auditors_only(traced: Server) -> None:
    def scrape(who: str) -> dict[str, float]:
        with traced.client(who) as client:
            answer = client.get("/metrics")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        return {f"{sample.name}{sorted(sample.labels.items())}": sample.value
                for family in text_string_to_metric_families(answer.text)
                for sample in family.samples}

    kills = "sandgate_tripwire_kills_total[('phase', 'dry_run')]"
    denied = "sandgate_submissions_total[('state', 'denied')]"
    before = scrape("audrey")
    with traced.client("alice") as alice:
        done = alice.post("/v1/submissions", params={"wait": 30},
                          json={"language": "python", "code": TRIPWIRE}).json()
        assert done["state"] == "denied", done
        assert alice.get("/metrics").status_code == 403  # an agent sees no one's counts
    assert httpx.get(f"{traced.url}/metrics").status_code == 401
    after = scrape("root")
    assert after[kills] == before[kills] + 1
    assert after[denied] == before[denied] + 1
    assert after["sandgate_limits_hit_total[('kind', 'seccomp_tripwire'), ('phase', "
                 "'dry_run')]"] == before["sandgate_limits_hit_total[('kind', "
                                          "'seccomp_tripwire'), ('phase', 'dry_run')]"] + 1
    assert after["sandgate_receipts_sealed_total[]"] >= 1
    assert after["sandgate_stage_duration_seconds_count[('stage', 'dry_run')]"] >= 1
    assert after["sandgate_queue_capacity[]"] > 0
    assert after["sandgate_sandboxes_running[]"] == 0
    assert "sandgate_decisions_total[('gate', 'run'), ('outcome', 'DENY')]" in after

