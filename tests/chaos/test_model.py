"""A property-based model: submit, approve or reject, crash (kill -9), restart — in any order
Hypothesis finds — against the real service, and every invariant holds at the end."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from controller.settings import Settings
from controller.tools.invariants import check
from tests.api.conftest import Server, make_server
from tests.conftest import bundle_with, owned_containers, parking_rule

pytestmark = pytest.mark.docker
PARK_RULE = parking_rule(2)
ORDINARY = "print('ordinary')"
PARKING = "for i in range(3):\n    open(f'p{i}', 'w').write('x')"
TERMINAL = {"committed", "rolled_back", "quarantined", "denied"}


class ServiceModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sandgate-model-"))
        bundle = bundle_with(self.tmp, "bundle", PARK_RULE)
        self.server: Server = make_server(self.tmp, "model", policy_dir=str(bundle),
                                          policy_watch_s="0", workers="2")
        self.server.principal("agent")
        self.server.principal("carol", "approver")
        self.server.principal("audit", "auditor")
        self.server.start()
        self.accepted: list[str] = []
        self.workspace = 0

    def _post(self, code: str) -> None:
        self.workspace += 1  # a fresh workspace each time: parking depends on new files
        with self.server.client("agent") as agent:
            answer = agent.post("/v1/submissions", json={
                "language": "python", "code": code, "workspace": f"m{self.workspace}"})
        assert answer.status_code in (202, 503), answer.text
        if answer.status_code == 202:
            self.accepted.append(answer.json()["id"])

    @rule()
    def submit_ordinary(self) -> None:
        self._post(ORDINARY)

    @rule()
    def submit_one_that_parks(self) -> None:
        self._post(PARKING)

    @rule(approve=st.booleans())
    def answer_an_approval(self, approve: bool) -> None:
        with self.server.client("carol") as carol:
            waiting = carol.get("/v1/approvals").json()
            if waiting:
                sid = waiting[0]["submission"]["id"]
                answer = carol.post(f"/v1/submissions/{sid}/approval",
                                    json={"approve": approve, "reason": "model"})
                assert answer.status_code in (200, 422), answer.text  # 422: answered already

    @precondition(lambda self: bool(self.accepted))
    @rule(pause=st.floats(min_value=0.0, max_value=1.5))
    def crash_and_restart(self, pause: float) -> None:
        time.sleep(pause)
        self.server.stop(signal.SIGKILL)
        self.server.start()

    @rule()
    def graceful_restart(self) -> None:
        self.server.stop(signal.SIGTERM)
        self.server.start()

    def teardown(self) -> None:
        try:
            self._settle()
            assert check(Settings(data_dir=self.server.data, owner=self.server.owner),
                         containers=owned_containers(self.server.owner)) == []
        finally:
            self.server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _settle(self) -> None:
        """Reject what is parked, then wait for every accepted submission to end."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with self.server.client("carol") as carol:
                for request in carol.get("/v1/approvals").json():
                    carol.post(f"/v1/submissions/{request['submission']['id']}/approval",
                               json={"approve": False, "reason": "model teardown"})
            with self.server.client("audit") as audit:
                listed = audit.get("/v1/submissions", params={"limit": 200}).json()
            states = {s["id"]: s["state"] for s in listed["submissions"]}
            assert set(self.accepted) <= set(states), "an accepted submission was lost"
            if set(states.values()) <= TERMINAL:
                return
            time.sleep(0.5)
        raise AssertionError("submissions did not settle")


ServiceModel.TestCase.settings = settings(
    max_examples=5, stateful_step_count=8, deadline=None,
    suppress_health_check=list(HealthCheck))
test_service_model = ServiceModel.TestCase

