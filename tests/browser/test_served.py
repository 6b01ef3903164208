"""The console of ``sandgate serve`` itself, on real Docker: an auditor watches a submission
park and, once approved, commit, live; an approver approves from the console; the receipt
of the real run verifies in the browser."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from tests.api.conftest import Server, make_server
from tests.browser.conftest import Console, chromium_session, fresh
from tests.conftest import bundle_with, owned_containers, parking_rule

pytestmark = [pytest.mark.browser, pytest.mark.docker]
MANY_FILES = "for i in range(5):\n    open(f'n{i}', 'w').write('x')"
PARKED_BY = "run_unattended.many-new-files"
RUN_S = 60.0  # a real run's deadline, on a busy two-core machine


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``sandgate serve`` with a bundle that parks a dry run creating over 3 files."""
    tmp = tmp_path_factory.mktemp("served-console")
    bundle = bundle_with(tmp, "bundle", parking_rule(3))
    server = make_server(tmp, "console", policy_dir=str(bundle), policy_watch_s="0")
    for name, role in (("agent", "agent"), ("carol", "approver"), ("audrey", "auditor")):
        server.principal(name, role)
    server.start()
    yield server
    server.stop()
    assert owned_containers(server.owner) == []


@pytest.fixture(scope="module")
def served_chromium(served: Server) -> Iterator[Chrome]:
    with chromium_session() as driver:
        yield driver


@pytest.fixture
def browser(served_chromium: Chrome) -> Iterator[Chrome]:
    with fresh(served_chromium) as driver:
        yield driver


@pytest.fixture
def page(browser: Chrome, served: Server) -> Console:
    return Console(browser, served.url)


def park(served: Server, workspace: str) -> str:
    with served.client("agent") as agent:
        answer = agent.post("/v1/submissions", params={"wait": 30},
                            json={"language": "python", "code": MANY_FILES,
                                  "workspace": workspace})
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "awaiting_approval", answer.json()["reason"]
    return str(answer.json()["id"])


def ended(served: Server, sid: str) -> str:
    deadline = time.monotonic() + RUN_S
    with served.client("agent") as agent:
        while time.monotonic() < deadline:
            state = str(agent.get(f"/v1/submissions/{sid}").json()["state"])
            if state in {"committed", "rolled_back", "quarantined", "denied"}:
                return state
            time.sleep(0.2)
    raise AssertionError(f"{sid} did not end within {RUN_S} s")


def test_an_auditor_watches_a_parked_submission_commit_live_and_its_receipt_verify(
        page: Console, served: Server) -> None:
    page.sign_in(served.keys["audrey"], "#/submissions")
    page.shown("#submissions")
    page.driver.execute_script("window.notReloaded = true")
    sid = park(served, "watched")
    page.wait(lambda d: page.listed_state(sid) == "awaiting_approval", "the parked row")
    with served.client("carol") as carol:
        answer = carol.post(f"/v1/submissions/{sid}/approval",
                            json={"approve": True, "reason": "five files, expected"})
    assert answer.status_code == 200, answer.text
    page.wait(lambda d: page.listed_state(sid) == "committed", "the row to commit", RUN_S)
    assert page.driver.execute_script("return window.notReloaded") is True
    page.find(f'#submission-rows tr[data-submission="{sid}"] a').click()
    verdict = page.shown(".verdict", "the receipt's verdict")
    assert verdict.get_attribute("data-verdict") == "verified", verdict.text
    decisions = page.find("#decisions").text
    assert PARKED_BY in decisions and "REQUIRE_APPROVAL" in decisions
    dry_run = page.find('[data-phase="dry_run"]').text
    assert "5 created" in dry_run and "n0" in dry_run
    assert "carol" in page.find("main").text  # the approval, read from the signed receipt


def test_an_approver_approves_from_the_served_console(page: Console, served: Server) -> None:
    sid = park(served, "approved-here")
    page.sign_in(served.keys["carol"], "#/approvals")
    card = page.shown(f'#approval-queue article[data-submission="{sid}"]', "the parked card")
    assert PARKED_BY in card.text and "open(f'n{i}'" in card.text
    card.find_element(By.CSS_SELECTOR, "textarea").send_keys("reviewed in the console")
    card.find_element(By.CSS_SELECTOR, 'button[data-answer="approve"]').click()
    assert "Approved" in page.shown("#approval-outcome").text
    assert ended(served, sid) == "committed"
    with served.client("agent") as agent:
        envelope = agent.get(f"/v1/receipts/{sid}").json()
    approval = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["approval"]
    assert (approval["approver"], approval["reason"]) == ("carol", "reviewed in the console")
