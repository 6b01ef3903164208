"""The independent verifier on hand-made logs: one receipt per submission, the key schedule
(rotations recorded in the log, retired keys refused), strict field types, ``--code``.

Envelopes, rotation records and payloads are built here with the standard library and
``cryptography`` alone, from the formats as documented, not with the writer's code: a test
that borrowed the writer's encoding could not see the two drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from controller.verify.chain import verify_log
from controller.verify.cli import main

RECEIPT_TYPE = "application/vnd.in-toto+json"
ROTATION_TYPE = "application/vnd.sandgate.key-rotation+json"


def kid(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign(payload: bytes, key: Ed25519PrivateKey, payload_type: str = RECEIPT_TYPE,
         ) -> dict[str, Any]:
    kind = payload_type.encode()
    message = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": kid(key),
                            "sig": base64.b64encode(key.sign(message)).decode()}]}


def dumps(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def handover(outgoing: Ed25519PrivateKey, incoming: Ed25519PrivateKey, sequence: int, *,
             signer: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    body = {"_type": "https://sandgate.dev/key-rotation/v1", "outgoing": kid(outgoing),
            "incoming": kid(incoming), "from_sequence": sequence}
    return sign(dumps(body), signer or outgoing, ROTATION_TYPE)


def statement(predicate: dict[str, Any], code: bytes = b"print(1)\n") -> dict[str, Any]:
    sid = predicate.get("submission_id", "x")
    return {"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": f"submission/{sid}/main.py",
                         "digest": {"sha256": hashlib.sha256(code).hexdigest()}}],
            "predicateType": "https://sandgate.dev/receipt/v1",
            "predicate": predicate}


class Log:
    """A log written receipt by receipt, each chained to the one before."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.previous: str | None = None

    def add(self, key: Ed25519PrivateKey, submission: str | None = None,
            code: bytes = b"print(1)\n", **extra: Any) -> None:
        sequence = len(self.lines) + 1
        predicate = {"submission_id": submission or f"sub{sequence}", "state": "committed",
                     "sequence": sequence, "previous_receipt_digest": self.previous, **extra}
        self.append(statement(predicate, code), key)

    def append(self, document: dict[str, Any], key: Ed25519PrivateKey) -> None:
        payload = dumps(document)
        self.lines.append(json.dumps(sign(payload, key)))
        self.previous = "sha256:" + hashlib.sha256(payload).hexdigest()


def keys_of(*private: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {kid(key): key.public_key() for key in private}


def reasons(log: Log, *private: Ed25519PrivateKey) -> list[tuple[int | None, str]]:
    report = verify_log(log.lines, keys_of(*private))
    return [(problem.sequence, problem.reason) for problem in report.problems]


@pytest.fixture
def old() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def new() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def rotated(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> Log:
    """Sequences 1-2 signed by ``old``, 3-4 by ``new``, the handover carried by 3."""
    log = Log()
    log.add(old)
    log.add(old)
    log.add(new, key_rotation=handover(old, new, 3))
    log.add(new)
    return log


def test_a_second_receipt_for_one_submission_is_reported(old: Ed25519PrivateKey) -> None:
    log = Log()
    log.add(old, "alpha")
    log.add(old, "beta")
    log.add(old, "alpha")  # well signed and chained: only the count gives it away
    found = reasons(log, old)
    assert len(found) == 1 and found[0][0] == 3
    assert "alpha already has a receipt (seq 1" in found[0][1]


def test_a_rotation_recorded_in_the_log_verifies(old: Ed25519PrivateKey,
                                                 new: Ed25519PrivateKey) -> None:
    assert reasons(rotated(old, new), old, new) == []


def test_a_retired_key_cannot_sign_after_its_retirement(old: Ed25519PrivateKey,
                                                        new: Ed25519PrivateKey) -> None:
    log = rotated(old, new)
    log.add(old)  # sequence 5, by the key retired at 3 (a leaked key, say)
    assert reasons(log, old, new) == [(5, f"signed by key {kid(old)[:12]}, retired at "
                                          "sequence 3: a retired key cannot sign new "
                                          "sequence numbers")]


def test_a_key_change_without_a_rotation_record_is_refused(old: Ed25519PrivateKey,
                                                           new: Ed25519PrivateKey) -> None:
    log = Log()
    log.add(old)
    log.add(new)
    log.add(new)
    found = reasons(log, old, new)
    assert [seq for seq, _ in found] == [2, 3]
    assert "no rotation record hands over to it" in found[0][1]


@pytest.mark.parametrize("flaw", ["signed by incoming", "other sequence", "other incoming",
                                  "from a key not active"])
def test_a_rotation_record_must_be_the_active_keys_word_for_this_sequence(
        old: Ed25519PrivateKey, new: Ed25519PrivateKey, flaw: str) -> None:
    third = Ed25519PrivateKey.generate()
    record = {
        "signed by incoming": handover(old, new, 2, signer=new),
        "other sequence": handover(old, new, 7),
        "other incoming": handover(old, third, 2),
        "from a key not active": handover(third, new, 2),
    }[flaw]
    log = Log()
    log.add(old)
    log.add(new, key_rotation=record)
    found = reasons(log, old, new, third)
    assert [seq for seq, _ in found] == [2]
    assert found[0][1].startswith("key_rotation: ")


def test_a_retired_key_never_becomes_active_again(old: Ed25519PrivateKey,
                                                  new: Ed25519PrivateKey) -> None:
    log = rotated(old, new)
    log.add(old, key_rotation=handover(new, old, 5))  # the new key hands back: refused
    found = reasons(log, old, new)
    assert [seq for seq, _ in found] == [5]
    assert "retired and cannot become active again" in found[0][1]


def test_a_tail_may_begin_anywhere_in_the_key_schedule(old: Ed25519PrivateKey,
                                                       new: Ed25519PrivateKey) -> None:
    lines = rotated(old, new).lines
    assert verify_log(lines[2:], keys_of(old, new), first_seq=3).ok
    assert verify_log(lines[3:], keys_of(new), first_seq=4).ok


def test_a_minimal_predicate_verifies(old: Ed25519PrivateKey) -> None:
    log = Log()
    log.add(old, minimal=True, reason="the full receipt could not be built")
    assert reasons(log, old) == []


@pytest.mark.parametrize(("field", "value"), [
    ("sequence", True),  # a bool is an int to Python, never a sequence number
    ("sequence", 0),
    ("sequence", -1),
    ("sequence", "1"),
    ("sequence", 1.0),
    ("sequence", 2**53),
    ("previous_receipt_digest", "sha256:" + "z" * 64),
    ("previous_receipt_digest", "ab" * 32),
    ("previous_receipt_digest", 0),
    ("submission_id", ""),
    ("submission_id", 7),
    ("state", "running"),
    ("agent", 5),
    ("decisions", {}),
    ("key_rotation", "yes"),
])
def test_a_field_of_the_wrong_type_is_refused(old: Ed25519PrivateKey, field: str,
                                              value: Any) -> None:
    predicate = {"submission_id": "s", "state": "denied", "sequence": 1,
                 "previous_receipt_digest": None, field: value}
    log = Log()
    log.append(statement(predicate), old)
    found = reasons(log, old)
    assert len(found) == 1 and f"predicate.{field}" in found[0][1]


def test_a_missing_previous_digest_is_refused(old: Ed25519PrivateKey) -> None:
    log = Log()
    log.append(statement({"submission_id": "s", "state": "denied", "sequence": 1}), old)
    assert "previous_receipt_digest is missing" in reasons(log, old)[0][1]


@pytest.mark.parametrize("digest", ["AB" * 32, "ab" * 31, "sha256:" + "ab" * 32, 7])
def test_a_subject_digest_of_the_wrong_shape_is_refused(old: Ed25519PrivateKey,
                                                        digest: Any) -> None:
    document = statement({"submission_id": "s", "state": "denied", "sequence": 1,
                          "previous_receipt_digest": None})
    document["subject"][0]["digest"]["sha256"] = digest
    log = Log()
    log.append(document, old)
    assert "subject must be" in reasons(log, old)[0][1]


@pytest.mark.parametrize("payload", [
    b'{"_type":"https://in-toto.io/Statement/v1","_type":"x"}',  # which _type is it?
    b'{"_type":NaN}',
])
def test_json_with_two_readings_is_refused(old: Ed25519PrivateKey, payload: bytes) -> None:
    report = verify_log([json.dumps(sign(payload, old))], keys_of(old))
    assert [p.sequence for p in report.problems] == [1]
    assert "not JSON" in report.problems[0].reason


def _files(tmp_path: Path, log: Log, *keys: Ed25519PrivateKey) -> tuple[str, str]:
    (tmp_path / "log.jsonl").write_text("\n".join(log.lines) + "\n")
    (tmp_path / "keys.pem").write_bytes(b"".join(
        key.public_key().public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        for key in keys))
    return str(tmp_path / "log.jsonl"), str(tmp_path / "keys.pem")


def test_verify_code_checks_the_subject_digest(old: Ed25519PrivateKey, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = Log()
    log.add(old, "alpha", code=b"print('alpha')\n")
    log.add(old, "beta", code=b"print('beta')\n")
    log_file, keys = _files(tmp_path, log, old)
    code = tmp_path / "alpha.py"
    code.write_bytes(b"print('alpha')\n")
    assert main([log_file, "--key", keys, "--code", str(code), "--submission", "alpha"]) == 0
    assert "is the code of submission alpha (seq 1)" in capsys.readouterr().out

    assert main([log_file, "--key", keys, "--code", str(code), "--submission", "beta"]) == 1
    out = capsys.readouterr().out
    expected = hashlib.sha256(b"print('beta')\n").hexdigest()
    assert f"BAD seq 2 (line 2): the receipt of submission beta records code sha256 " \
           f"{expected}" in out

    assert main([log_file, "--key", keys, "--code", str(code), "--submission", "gamma"]) == 1
    assert "no verified receipt of submission gamma" in capsys.readouterr().out


def test_verify_cli_reports_a_retired_key(old: Ed25519PrivateKey, new: Ed25519PrivateKey,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    log = rotated(old, new)
    log_file, keys = _files(tmp_path, log, old, new)
    assert main([log_file, "--key", keys]) == 0
    log.add(old)
    log_file, keys = _files(tmp_path, log, old, new)
    assert main([log_file, "--key", keys]) == 1
    assert "BAD seq 5 (line 5): signed by key" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--code", "x.py"], ["--submission", "s"],
                                  ["--checkpoint", "c.json", "--from-seq", "2"]])
def test_verify_cli_refuses_incomplete_options(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["log.jsonl", "--key", "keys.pem", *args])
    assert exit_.value.code == 2
