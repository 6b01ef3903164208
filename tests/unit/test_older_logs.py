"""A receipt log exported by the release before the layered layout (fixtures: its receipts
and public keys, a key rotation among them) verifies with today's verifier, and a receipt of
it changed by one byte does not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys

FIXTURE = Path(__file__).parent.parent / "fixtures" / "log-before-layout"


def lines() -> list[str]:
    return (FIXTURE / "receipts.jsonl").read_text().splitlines()


def test_a_log_exported_before_the_layout_change_verifies() -> None:
    report = verify_log(lines(), load_public_keys((FIXTURE / "keys.pem").read_bytes()))
    assert report.ok, report.problems
    states = [json.loads(base64.b64decode(json.loads(line)["payload"]))["predicate"]["state"]
              for line in lines()]
    assert states == ["committed", "committed", "quarantined", "rolled_back", "committed"]


def test_a_changed_receipt_of_that_log_does_not() -> None:
    found = lines()
    envelope = json.loads(found[2])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["state"] = "committed"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    found[2] = json.dumps(envelope)
    report = verify_log(found, load_public_keys((FIXTURE / "keys.pem").read_bytes()))
    assert [(p.sequence, "no valid signature" in p.reason) for p in report.problems] == [(3, True)]
