"""The console in Chromium, against the real app over the fake runtime: signing in and out,
the list kept live by the feed, approving a parked submission, receipts verified in the
browser (and a tampered one refused), hostile output shown as text, and a keyboard and a
screen reader finding their way."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import DEADLINE_S, Console, ConsoleServer, console_server
from tests.conftest import ROOT

pytestmark = pytest.mark.browser
UNKNOWN_KEY = "sg_" + "x" * 43  # shaped like a key, held by no one
PAGE = 50  # the console's page of submissions


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


def asked(page: Console) -> list[str]:
    """The path and query of every request the page made (the Resource Timing API)."""
    found = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => {"
        " const url = new URL(e.name); return url.pathname + url.search; })")
    assert isinstance(found, list)
    return [str(entry) for entry in found]


def test_signing_in_asks_who_the_key_is_and_a_reload_asks_again(
        page: Console, console: ConsoleServer) -> None:
    page.sign_in(console.keys["carol"], "#/submissions")
    assert "Signed in as carol (approver)" in page.text("#who")
    assert page.find('#nav a[data-view="approvals"]').is_displayed()
    assert "/v1/me" in asked(page)
    page.driver.refresh()  # the key is kept in the tab: no sign-in form, the caller named
    page.wait(lambda d: "Signed in as carol (approver)" in page.text("#who"),
              "the caller named after a reload")
    page.shown('#nav a[data-view="approvals"]', "the approvals link")
    requests = asked(page)
    assert "/v1/me" in requests
    assert not any(path.startswith("/v1/approvals") for path in requests)  # no probing
    assert page.console_errors() == []


def test_a_kept_key_no_longer_accepted_signs_out_with_a_message(page: Console) -> None:
    page.open("#/submissions")
    page.driver.execute_script(
        "window.sessionStorage.setItem('sandgate.apiKey', arguments[0])", UNKNOWN_KEY)
    page.driver.refresh()  # as if signed in with it before it was revoked
    error = page.wait(lambda d: d.find_element(By.ID, "sign-in-error").text, "a message")
    assert "no longer accepted" in error
    assert page.session_key() is None and page.find("#nav").is_displayed() is False


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


def test_the_workspace_filter_asks_the_api_and_finds_what_no_loaded_page_holds(
        page: Console, console: ConsoleServer) -> None:
    deep = submit(console, "alice", "print('deep')", workspace="deep-ws")["id"]
    newer = [submit(console, "alice", f"print({n})", workspace="deep-newer")["id"]
             for n in range(PAGE)]
    page.sign_in(console.keys["alice"], "#/submissions")
    page.wait(lambda d: page.listed_state(newer[-1]) == "committed", "the first page")
    assert page.listed_state(deep) is None  # not among the newest page's submissions
    page.find("#filter-workspace").send_keys("deep-ws", Keys.ENTER)
    page.wait(lambda d: page.text("#submission-count") == "1 submission shown (workspace "
              "deep-ws)", "the filtered list")
    assert page.listed_state(deep) == "committed"
    assert "/v1/submissions?limit=50&workspace=deep-ws" in asked(page)
    page.find("#filter-workspace").clear()
    page.find("#filter-workspace").send_keys("../deep-ws", Keys.ENTER)
    refusal = page.shown("#view .error", "the API's refusal")
    assert "query.workspace" in refusal.text
    assert page.text("#submission-count") == "0 submissions shown (workspace ../deep-ws)"


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


def test_profiles_policies_readiness_queue_and_lint_are_shown(page: Console,
                                                                console: ConsoleServer) -> None:
    with console.client("root") as root:
        policies = root.get("/v1/policies").json()
        profiles = root.get("/v1/profiles").json()
        lint = root.get("/v1/profiles/lint").json()
    page.sign_in(console.keys["root"], "#/configuration")
    table = page.shown("#profile-table", "the profiles")
    for profile in profiles:
        assert profile["name"] in table.text
    assert policies["digest"] in page.text("#policies")
    assert page.text("#shadow-disagreements") == str(policies["shadow_disagreements"])
    assert "kernel_audit" in page.shown("#readiness table").text
    findings = page.shown("#lint-table", "the profiles' lint").text
    assert {entry["file"] for entry in lint} == {"standard.yaml", "strict.yaml"}
    assert "standard.yaml" in findings and "strict.yaml" in findings
    assert page.text("#lint-summary").startswith("0 errors, 0 warnings in 2 profile files")
    queue = page.shown("#queue-state dl", "the run queue").text
    assert "of 2 workers" in queue and "of 10" in queue  # the harness: 2 workers, 8 queued
    assert page.console_errors() == []


def test_the_run_queue_follows_submissions_live(page: Console,
                                                console: ConsoleServer) -> None:
    page.sign_in(console.keys["audrey"], "#/configuration")
    page.wait(lambda d: page.text("#queue-running") == "0", "an idle queue")
    console.script.started.clear()
    console.script.gate.clear()
    submit(console, "alice", "block in the queue", wait=0, workspace="queue-ws")
    submit(console, "alice", "block behind it", wait=0, workspace="queue-ws")
    try:
        assert console.script.started.wait(DEADLINE_S)
        page.wait(lambda d: (page.text("#queue-running"), page.text("#queue-waiting"))
                  == ("1", "1"), "one running and one waiting (an agent runs one at a time)")
    finally:
        console.script.gate.set()
    page.wait(lambda d: (page.text("#queue-running"), page.text("#queue-waiting"))
              == ("0", "0"), "the queue to empty")


def test_an_agent_is_told_the_queue_and_lint_are_for_admins_and_auditors(
        page: Console, console: ConsoleServer) -> None:
    page.sign_in(console.keys["alice"], "#/configuration")
    page.shown("#profile-table", "the profiles")
    for part in ("#profile-lint", "#queue"):
        note = page.shown(f"{part} .note", f"the note in {part}")
        assert "admins and auditors" in note.text
    assert page.all("#lint-table") == [] and page.all("#queue-state") == []
    assert not any(path.startswith(("/v1/status", "/v1/profiles/lint"))
                   for path in asked(page))  # not even asked: nothing refused
    assert page.console_errors() == []


def test_lint_findings_and_a_profile_changed_since_loading_are_shown(
        browser: Chrome, tmp_path: Path) -> None:
    profiles = Path(shutil.copytree(ROOT / "profiles", tmp_path / "profiles"))
    standard = profiles / "standard.yaml"
    standard.write_text(standard.read_text().replace("  pids: 64\n", "  pids: 4096\n"))
    (profiles / "broken.yaml").write_text("name: [unclosed\n")
    with console_server(tmp_path, profiles_dir=profiles) as server:
        page = Console(browser, server.url)
        page.sign_in(server.keys["audrey"], "#/configuration")
        findings = page.shown("#lint-table", "the profiles' lint").text
        assert page.text("#lint-summary").startswith("1 error, 1 warning in 3 profile files")
        assert "pids 4096 is high for one sandbox" in findings
        assert "broken.yaml" in findings and "(does not load)" in findings
        note = page.text("#profile-lint .note")
        assert "broken.yaml" in note and "standard.yaml" in note and "strict" not in note
        browser.get("about:blank")  # its stream ends before the server stops


def test_direction_controls_in_code_are_shown_not_obeyed(page: Console,
                                                          console: ConsoleServer) -> None:
    # Trojan Source: U+2067 makes the call read as part of the docstring; it runs.
    trojan = "''' Print a greeting. Then \u2067''' ;print('ran');\u2069 '''\n"
    sid = submit(console, "alice", trojan, workspace="trojan-ws")["id"]
    page.sign_in(console.keys["alice"], f"#/submissions/{sid}")
    page.shown(".verdict", "the page to render")
    code = page.find('pre.block[aria-label^="Submitted code"]')
    assert "\u2067" not in code.text and "⟨U+2067⟩" in code.text and "⟨U+2069⟩" in code.text
    assert "hidden-controls" in str(code.get_attribute("class"))
    assert "control characters" in str(code.get_attribute("aria-label"))
    verdict = page.find(".verdict")
    assert verdict.get_attribute("data-verdict") == "verified"  # on the bytes as submitted
    assert "sha256 of the code shown" in verdict.text
