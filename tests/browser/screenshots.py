"""The console's screenshots in docs/images: ``python -m tests.browser.screenshots``.

Runs the console over the fake runtime (no Docker), makes a few submissions (committed, one
parked for approval, one still in its dry run) and photographs the list, one submission
with its verified receipt, and the approvals queue, at a laptop's window size."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.browser.conftest import Console, ConsoleServer, chromium_session, console_server
from tests.conftest import ROOT

OUT = ROOT / "docs" / "images"


def submit(server: ConsoleServer, who: str, code: str, workspace: str,
           wait: float = 10) -> str:
    with server.client(who) as client:
        answer = client.post("/v1/submissions", params={"wait": wait},
                             json={"language": "python", "code": code, "workspace": workspace})
    answer.raise_for_status()
    return str(answer.json()["id"])


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, console_server(Path(tmp)) as server, \
            chromium_session() as driver:
        shown = submit(server, "alice", "import json\nprint(json.dumps({'rows': 42}))",
                       "reports")
        submit(server, "bob", "print('hello from bob')", "scratch")
        submit(server, "alice", "create 5", "bulk-import")
        server.script.gate.clear()
        submit(server, "bob", "block while the screenshot is taken", "nightly", wait=0)
        server.script.started.wait(10)
        page = Console(driver, server.url)
        page.sign_in(server.keys["root"], "#/submissions")
        page.wait(lambda d: len(page.all("#submission-rows tr")) >= 4, "four rows")
        driver.save_screenshot(str(out / "console-submissions.png"))
        page.open(f"#/submissions/{shown}")
        page.shown(".verdict", "the verdict")
        driver.execute_script("document.querySelector('.verdict').scrollIntoView()")
        driver.save_screenshot(str(out / "console-receipt.png"))
        page.open("#/approvals")
        page.shown("#approval-queue article", "the parked submission")
        driver.save_screenshot(str(out / "console-approvals.png"))
        server.script.gate.set()
        driver.get("about:blank")  # its stream ends before the server stops
    for name in ("submissions", "receipt", "approvals"):
        print(out / f"console-{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
