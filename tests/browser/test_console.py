"""The console in Chromium, against the real app over the fake runtime: signing in and out,
the list kept live by the feed, approving a parked submission, receipts verified in the
browser (and a tampered one refused), hostile output shown as text, and a keyboard and a
screen reader finding their way."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import DEADLINE_S, Console, ConsoleServer

pytestmark = pytest.mark.browser
UNKNOWN_KEY = "sg_" + "x" * 43  # shaped like a key, held by no one


def submit(console: ConsoleServer, who: str, code: str, wait: float = DEADLINE_S,
           **fields: Any) -> dict[str, Any]:
    with console.client(who) as client:
        answer = client.post("/v1/submissions", params={"wait": wait},
                             json={"language": "python", "code": code, **fields})
    assert answer.status_code == 202, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_an_unknown_key_is_refused_with_a_clear_message(page: Console) -> None:
    page.open()
    page.shown("#api-key").send_keys(UNKNOWN_KEY)
    page.find("#sign-in-form button[type=submit]").click()
    error = page.wait(lambda d: d.find_element(By.ID, "sign-in-error").text, "an error")
    assert "not accepted" in error and "unknown or revoked API key" in error
    assert page.session_key() is None
    assert page.find("#nav").is_displayed() is False
    assert UNKNOWN_KEY not in page.driver.current_url


def test_the_key_stays_in_session_storage_out_of_urls_and_sign_out_forgets_it(
        page: Console, console: ConsoleServer) -> None:
    key = console.keys["alice"]
    page.sign_in(key)
    assert page.session_key() == key
    assert key not in page.driver.current_url
    assert page.driver.execute_script("return document.cookie") == ""
    assert page.driver.execute_script("return window.localStorage.length") == 0
    assert "Signed in as alice (agent)" in page.text("#who")
    assert page.find('#nav a[data-view="approvals"]').is_displayed() is False  # not an approver
    page.find("#sign-out").click()
    page.shown("#api-key")
    assert page.session_key() is None
    assert page.find("#view").is_displayed() is False
    page.open()  # a reload does not sign back in
    page.shown("#api-key")
    assert page.console_errors() == []  # no CSP violation, no script error


def test_a_submission_changes_state_live_in_the_list(page: Console,
                                                     console: ConsoleServer) -> None:
    page.sign_in(console.keys["audrey"], "#/submissions")
    page.shown("#submissions")
    page.driver.execute_script("window.notReloaded = true")
    console.script.started.clear()
    console.script.gate.clear()
    sid = submit(console, "alice", "block until the test says", wait=0,
                 workspace="live-ws")["id"]
    try:
        assert console.script.started.wait(DEADLINE_S)
        page.wait(lambda d: page.listed_state(sid) == "dry_run", "the row in dry_run")
    finally:
        console.script.gate.set()
    page.wait(lambda d: page.listed_state(sid) == "committed", "the row to reach committed")
    assert page.driver.execute_script("return window.notReloaded") is True
    row = page.find(f'#submission-rows tr[data-submission="{sid}"]')
    assert "alice" in row.text and "live-ws" in row.text
    live = page.find("#live")
    assert live.get_attribute("aria-live") == "polite"
    page.wait(lambda d: "committed" in (live.get_attribute("textContent") or ""),
              "the change to be announced")


def test_an_agent_sees_its_own_submissions_live_and_never_another_tenants(
        page: Console, console: ConsoleServer) -> None:
    page.sign_in(console.keys["bob"], "#/submissions")
    page.shown("#submissions")
    alices = submit(console, "alice", "print('not for bob')", workspace="tenant-a")["id"]
    bobs = submit(console, "bob", "print('bob')", workspace="tenant-b")["id"]
    page.wait(lambda d: page.listed_state(bobs) == "committed", "bob's own row")
    assert page.listed_state(alices) is None
    assert alices not in page.driver.page_source


def test_filters_narrow_the_list_by_state_and_workspace(page: Console,
                                                        console: ConsoleServer) -> None:
    kept = submit(console, "alice", "print('kept')", workspace="filter-ws")["id"]
    other = submit(console, "alice", "print('other')", workspace="filter-other")["id"]
    page.sign_in(console.keys["alice"], "#/submissions")
    page.wait(lambda d: page.listed_state(other) == "committed", "the unfiltered list")
    page.find("#filter-workspace").send_keys("filter-ws")
    page.find("#filter-state").send_keys("committed")
    page.find("#filter-workspace").send_keys(Keys.ENTER)
    page.wait(lambda d: page.text("#submission-count").startswith("1 submission shown"),
              "the filtered list")
    assert page.listed_state(kept) == "committed" and page.listed_state(other) is None
    page.find("#filter-state").send_keys("denied")
    page.find("#filter-workspace").send_keys(Keys.ENTER)
    page.wait(lambda d: page.text("#submission-count").startswith("0 submissions shown"),
              "no denied submission in filter-ws")
    assert page.listed_state(kept) is None


def test_an_approver_approves_a_parked_submission_from_the_console(
        page: Console, console: ConsoleServer) -> None:
    sid = submit(console, "alice", "create 5", workspace="approve-ws")["id"]
    page.sign_in(console.keys["carol"], "#/approvals")
    card = page.shown(f'#approval-queue article[data-submission="{sid}"]', "the parked card")
    assert "run_unattended.many-new-files" in card.text
    assert "create 5" in card.find_element(By.CSS_SELECTOR, "pre").text
    assert "n0" in card.text  # the dry run's changes, as evidence
    reason = card.find_element(By.CSS_SELECTOR, "textarea")
    assert page.driver.find_element(
        By.CSS_SELECTOR, f'label[for="{reason.get_attribute("id")}"]').text
    card.find_element(By.CSS_SELECTOR, 'button[data-answer="approve"]').click()
    assert "Give a reason" in page.wait(
        lambda d: card.find_element(By.CSS_SELECTOR, ".error").text, "a reason asked for")
    reason.send_keys("five new files, as the ticket says")
    card.find_element(By.CSS_SELECTOR, 'button[data-answer="approve"]').click()
    outcome = page.shown("#approval-outcome", "the answer's outcome")
    assert f"Approved submission {sid[:12]}" in outcome.text
    assert not page.all(f'#approval-queue article[data-submission="{sid}"]')
    with console.client("alice") as alice:
        page.wait(lambda d: alice.get(f"/v1/submissions/{sid}").json()["state"] == "committed",
                  "the approved run to commit")
        envelope = alice.get(f"/v1/receipts/{sid}").json()
    approval = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["approval"]
    assert approval["approver"] == "carol" and approval["approve"] is True
    assert approval["reason"] == "five new files, as the ticket says"


def test_a_rejection_from_the_console_denies_the_submission(page: Console,
                                                            console: ConsoleServer) -> None:
    sid = submit(console, "alice", "create 6", workspace="reject-ws")["id"]
    page.sign_in(console.keys["root"], "#/approvals")
    card = page.shown(f'#approval-queue article[data-submission="{sid}"]', "the parked card")
    card.find_element(By.CSS_SELECTOR, "textarea").send_keys("not today")
    card.find_element(By.CSS_SELECTOR, 'button[data-answer="reject"]').click()
    assert "Rejected" in page.shown("#approval-outcome").text
    with console.client("alice") as alice:
        found = alice.get(f"/v1/submissions/{sid}").json()
    assert found["state"] == "denied"


def tampered(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its statement's state changed, re-encoded, the signature kept."""
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["state"] = "denied" if statement["predicate"]["state"] \
        == "committed" else "committed"
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return {**envelope, "payload": payload}


def paste_and_verify(page: Console, envelope: object) -> tuple[str, str]:
    field = page.find("#pasted-receipt")
    field.clear()
    page.driver.execute_script("arguments[0].value = arguments[1]", field,
                               json.dumps(envelope))
    page.driver.execute_script("document.getElementById('pasted-verdict').replaceChildren()")
    page.find("#pasted-receipt ~ .actions button").click()
    verdict = page.shown("#pasted-verdict .verdict", "a verdict")
    return str(verdict.get_attribute("data-verdict")), verdict.text


def test_a_receipt_is_verified_in_the_browser_and_a_tampered_one_refused(
        page: Console, console: ConsoleServer) -> None:
    sid = submit(console, "alice", "print('receipt')", workspace="receipt-ws")["id"]
    page.sign_in(console.keys["alice"], f"#/submissions/{sid}")
    verdict = page.shown(".verdict", "the receipt's verdict")
    assert verdict.get_attribute("data-verdict") == "verified", verdict.text
    assert "Verified in this browser" in verdict.text and "names this submission" in verdict.text
    with console.client("alice") as alice:
        envelope = alice.get(f"/v1/receipts/{sid}").json()
        keys = alice.get("/v1/keys").json()
    assert keys[0]["key_id"][:16] in verdict.text
    page.open("#/receipts")
    page.shown("#pasted-receipt")
    assert paste_and_verify(page, envelope)[0] == "verified"
    result, text = paste_and_verify(page, tampered(envelope))
    assert result == "refused" and "no valid signature" in text
    forged = {**envelope, "signatures": [{"keyid": keys[0]["key_id"],
                                          "sig": base64.b64encode(bytes(64)).decode()}]}
    result, text = paste_and_verify(page, forged)
    assert result == "refused" and "no valid signature" in text
    result, text = paste_and_verify(page, {**envelope, "payloadType": "text/plain"})
    assert result == "refused" and "payloadType" in text
    result, text = paste_and_verify(page, {**envelope, "payload": envelope["payload"] + "!"})
    assert result == "refused" and "not base64" in text


def test_the_receipt_log_verifies_every_receipt_and_its_chain(page: Console,
                                                              console: ConsoleServer) -> None:
    for n in range(2):
        submit(console, "bob", f"print({n})", workspace=f"chain-{n}")
    with console.client("audrey") as audrey:
        count = len(audrey.get("/v1/receipts", params={"limit": 1000}).json()["receipts"])
    page.sign_in(console.keys["audrey"], "#/receipts")
    summary = page.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#receipt-summary p"),
                        "the log's summary")
    assert summary.get_attribute("data-chain") == "intact"
    assert f"{count} receipts loaded: {count} verified, 0 refused" in summary.text
    assert f"Chain: {count - 1} links checked, 0 broken, 0 not checkable" in summary.text
    links = [row.get_attribute("data-link") for row in page.all("#receipt-rows tr")]
    assert links == ["first"] + ["ok"] * (count - 1)


def test_hostile_code_and_output_are_shown_as_text(page: Console,
                                                   console: ConsoleServer) -> None:
    hostile = "<img src=x id=pwned onerror=\"window.pwned=1\"><script>window.pwned=2</script>"
    sid = submit(console, "alice", hostile, workspace="hostile-ws")["id"]
    page.sign_in(console.keys["alice"], f"#/submissions/{sid}")
    page.shown(".verdict", "the page to render")
    blocks = [element.text for element in page.all("pre.block")]
    assert hostile in blocks  # the code, character for character
    assert f"ran: {hostile}" in blocks  # its output too
    assert page.all("#pwned") == [] and page.all("main script") == []
    assert page.driver.execute_script("return window.pwned === undefined") is True


def test_a_keyboard_signs_in_moves_between_views_and_lands_on_each_heading(
        page: Console, console: ConsoleServer) -> None:
    page.open()
    active = page.driver.switch_to.active_element
    assert active.get_attribute("id") == "api-key"  # focus starts where the key goes
    active.send_keys(console.keys["audrey"], Keys.ENTER)
    page.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-feed")
              == "live", "the live feed")
    for view, title in (("receipts", "Receipts"), ("configuration", "Profiles and policies"),
                        ("submissions", "Submissions")):
        link = page.find(f'#nav a[data-view="{view}"]')
        link.send_keys(Keys.ENTER)

        def on_heading(driver: Chrome, title: str = title) -> bool:
            return bool(driver.switch_to.active_element.text == title)

        page.wait(on_heading, f"focus on the {title} heading")
        assert link.get_attribute("aria-current") == "page"
    assert page.find("header").is_displayed() and page.find("main").is_displayed()
    assert page.find("nav").get_attribute("aria-label") == "Views"
    unlabelled = page.driver.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter(e => !e.getAttribute('aria-label') &&
                       !document.querySelector(`label[for="${e.id}"]`))
          .map(e => e.outerHTML);""")
    assert unlabelled == []
    page.find(".skip").send_keys(Keys.ENTER)
    assert page.driver.switch_to.active_element.get_attribute("id") == "main"


def test_profiles_policies_and_readiness_are_shown(page: Console,
                                                   console: ConsoleServer) -> None:
    with console.client("root") as root:
        policies = root.get("/v1/policies").json()
        profiles = root.get("/v1/profiles").json()
    page.sign_in(console.keys["root"], "#/configuration")
    table = page.shown("#profile-table", "the profiles")
    for profile in profiles:
        assert profile["name"] in table.text
    assert policies["digest"] in page.text("#policies")
    assert page.text("#shadow-disagreements") == str(policies["shadow_disagreements"])
    assert "kernel_audit" in page.shown("#readiness table").text
