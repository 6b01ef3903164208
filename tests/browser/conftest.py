"""Browser tests: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver, against a real HTTP server.

Two servers: ``console`` runs the real app under uvicorn on loopback, in this process, over
the fake runtime (no Docker: a test says what a run does by the code it submits, see
``tests.inproc.conftest.Script``) with a bundle that parks ``create 5``; the ``docker`` tests
start ``sandgate serve`` itself. Tests marked ``browser`` skip on a laptop without Chromium
and stop the session under CI=true. A failing test leaves a screenshot, the page's DOM and
the browser's console log in ``.sandgate/reports/browser/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from controller.adapters.runtime.fake import FakeRuntime
from controller.api.app import create_app
from tests.conftest import ROOT, _unrunnable
from tests.inproc.conftest import Script, context_for, parking_bundle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPORTS = ROOT / ".sandgate" / "reports" / "browser"
DEADLINE_S = 15.0
WINDOW = (1366, 900)  # a laptop screen
LISTED_STATE = ("const row = [...document.querySelectorAll('#submission-rows tr')]"
                ".find((r) => r.dataset.submission === arguments[0]);"
                " return row ? row.dataset.state : null;")


def _browser_ready() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing: apt-get install {package} (scripts/setup.sh does)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("browser") for item in items):
        _unrunnable("browser", _browser_ready(), items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, keep what the browser showed: a screenshot, the DOM, its console log."""
    report = yield
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.failed and isinstance(driver, Chrome):
        REPORTS.mkdir(parents=True, exist_ok=True)
        name = item.nodeid.replace("/", "_").replace("::", "-")[:150]
        try:
            driver.save_screenshot(str(REPORTS / f"{name}.png"))
            (REPORTS / f"{name}.html").write_text(driver.page_source)
            (REPORTS / f"{name}.log").write_text("\n".join(
                str(entry) for entry in browser_log(driver)))
            report.sections.append(("browser", f"screenshot and DOM in {REPORTS}/{name}.*"))
        except Exception as exc:  # the browser may be what failed
            report.sections.append(("browser", f"no screenshot: {exc}"))
    return report


def browser_log(driver: Chrome) -> list[dict[str, Any]]:
    """The browser's console messages since the last call (Selenium leaves it untyped)."""
    found: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ConsoleServer:
    """The app on a loopback port over the fake runtime; principals as in ``inproc``."""

    url: str
    keys: dict[str, str]
    script: Script

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=DEADLINE_S,
                            headers={"Authorization": f"Bearer {self.keys[who]}"})


@contextlib.contextmanager
def console_server(tmp: Path, **settings: Any) -> Iterator[ConsoleServer]:
    """The app under uvicorn on a free loopback port, over the fake runtime, with a bundle
    that parks ``create 5``; stopped (its runs drained) at the end. ``settings`` override
    the harness's (``tests.inproc.conftest.DEFAULTS``)."""
    script = Script()
    ctx, keys = context_for(tmp / "data", FakeRuntime(behaviour=script), parking_bundle(tmp),
                            {"stream_idle_s": 60.0, **settings})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield ConsoleServer(url=f"http://127.0.0.1:{port}", keys=keys, script=script)
    finally:
        script.gate.set()
        server.should_exit = True
        thread.join(DEADLINE_S * 2)
        ctx.principals.close()
        ctx.controller.store.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with console_server(tmp_path_factory.mktemp("console")) as running:
        yield running


@contextlib.contextmanager
def chromium_session() -> Iterator[Chrome]:
    """A headless Chromium at a laptop's window size, quit at the end."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-GB"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(DEADLINE_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def chromium(console: ConsoleServer) -> Iterator[Chrome]:
    """One browser for the module, quit before the server stops (its streams end first)."""
    with chromium_session() as driver:
        yield driver


@contextlib.contextmanager
def fresh(driver: Chrome) -> Iterator[Chrome]:
    """``driver`` for one test: on a blank page with an empty session storage after it."""
    browser_log(driver)  # what earlier tests logged is theirs
    yield driver
    with contextlib.suppress(Exception):  # a page of no origin has no storage
        driver.execute_script("window.sessionStorage.clear()")
    driver.get("about:blank")


@pytest.fixture
def browser(chromium: Chrome) -> Iterator[Chrome]:
    """The module's browser, for one test."""
    with fresh(chromium) as driver:
        yield driver


class Console:
    """The console in a browser: what a person does, and waits that say what they wait for."""

    def __init__(self, driver: Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self, fragment: str = "") -> None:
        self.driver.get(f"{self.url}/{fragment}")

    def wait(self, condition: Callable[[Chrome], Any], what: str,
             timeout: float = DEADLINE_S) -> Any:
        try:
            # A live page redraws: an element found a moment ago may be gone (stale), and
            # one not drawn yet is missing; either way, look again.
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05, ignored_exceptions=(
                NoSuchElementException, StaleElementReferenceException)).until(condition)
        except TimeoutException as exc:
            raise AssertionError(f"timed out waiting for {what}") from exc

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def shown(self, css: str, what: str | None = None) -> WebElement:
        """The element once it is on the page and displayed."""
        def visible(driver: Chrome) -> WebElement | bool:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return found[0] if found and found[0].is_displayed() else False
        found: WebElement = self.wait(visible, what or css)
        return found

    def sign_in(self, key: str, fragment: str = "") -> None:
        self.open(fragment)
        field = self.shown("#api-key")
        field.send_keys(key)
        self.find("#sign-in-form button[type=submit]").click()
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-feed")
                  == "live", "the live feed to open")

    def session_key(self) -> str | None:
        found = self.driver.execute_script(
            "return window.sessionStorage.getItem('sandgate.apiKey')")
        return found if isinstance(found, str) else None

    def listed_state(self, submission_id: str) -> str | None:
        """The state the submissions list shows (None: not listed), read in one step (a row
        is replaced as it changes)."""
        found = self.driver.execute_script(LISTED_STATE, submission_id)
        return found if isinstance(found, str) else None

    def text(self, css: str) -> str:
        return self.find(css).text

    def console_errors(self) -> list[str]:
        """What the page logged at level SEVERE (CSP violations and script errors), but
        for answers refused by the API (a wrong key's 401 is expected in some tests)."""
        return [str(entry["message"]) for entry in browser_log(self.driver)
                if entry["level"] == "SEVERE"
                and "Failed to load resource" not in str(entry["message"])]


@pytest.fixture
def page(browser: Chrome, console: ConsoleServer) -> Console:
    return Console(browser, console.url)
