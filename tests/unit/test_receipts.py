"""Receipts: DSSE over canonical in-toto statements, chained, verified by us and by others."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from controller.adapters.signing import KeyRing, envelope_json
from controller.core.models import State, Submission
from controller.core.receipts import canonical, statement
from controller.errors import SigningError
from controller.verify.chain import verify_log
from controller.verify.dsse import (
    VerificationError,
    load_public_keys,
    open_envelope,
    payload_digest,
)
from tests.conftest import python


def _submission(n: int) -> Submission:
    return Submission(id=f"sub{n}", trace_id=f"t{n}", request=python(f"print({n})"),
                      code_sha256="ab" * 32, state=State.DENIED, reason="test")


def _log(ring: KeyRing, count: int) -> list[str]:
    signer = ring.signer()
    lines, previous = [], None
    for n in range(1, count + 1):
        payload = canonical(statement(_submission(n), sequence=n, previous_digest=previous,
                                      profile_name="standard"))
        lines.append(envelope_json(payload, signer))
        previous = payload_digest(payload)
    return lines


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing(tmp_path / "keys")


def _keys(ring: KeyRing) -> dict[str, Ed25519PublicKey]:
    return load_public_keys("".join(k.pem for k in ring.public_keys()).encode())


def test_key_is_generated_0600_and_named_by_its_digest(ring: KeyRing) -> None:
    signer = ring.signer()
    path = ring.directory / f"{signer.key_id}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(_keys(ring)) == [signer.key_id]
    assert ring.signer().key_id == signer.key_id  # loaded, not regenerated


def test_key_readable_by_others_is_refused(ring: KeyRing) -> None:
    signer = ring.signer()
    os.chmod(ring.directory / f"{signer.key_id}.pem", 0o644)
    with pytest.raises(SigningError, match="0600"):
        ring.signer()


def test_a_clean_log_verifies(ring: KeyRing) -> None:
    report = verify_log(_log(ring, 5), _keys(ring))
    assert report.ok and report.checked == 5


def test_payload_is_canonical_in_toto(ring: KeyRing) -> None:
    envelope = json.loads(_log(ring, 1)[0])
    payload = base64.b64decode(envelope["payload"])
    document = json.loads(payload)
    assert canonical(document) == payload
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["subject"][0]["digest"]["sha256"] == "ab" * 32
    assert document["predicate"]["sequence"] == 1
    assert document["predicate"]["previous_receipt_digest"] is None


def test_third_party_dsse_verifies(ring: KeyRing) -> None:
    signer = ring.signer()
    public = ring.public_keys()[0]
    from cryptography.hazmat.primitives import serialization

    raw = serialization.load_pem_public_key(public.pem.encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = SSlibKey(keyid=signer.key_id, keytype="ed25519", scheme="ed25519",
                   keyval={"public": raw.hex()})
    for line in _log(ring, 3):
        envelope = Envelope.from_dict(json.loads(line))
        verified = envelope.verify([key], 1)
        assert signer.key_id in verified
    tampered = json.loads(_log(ring, 1)[0])
    tampered["payload"] = base64.b64encode(b'{"_type":"x"}').decode()
    from securesystemslib.exceptions import VerificationError as SslibVerificationError

    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(tampered).verify([key], 1)


def test_flipped_byte_is_reported_by_sequence(ring: KeyRing) -> None:
    lines = _log(ring, 4)
    envelope = json.loads(lines[2])
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b'"reason":"test"') + 10] ^= 0x01
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    lines[2] = json.dumps(envelope)
    report = verify_log(lines, _keys(ring))
    assert not report.ok
    assert [(p.sequence, "signature" in p.reason) for p in report.problems] == [(3, True)]


def test_reordered_and_removed_lines_are_reported(ring: KeyRing) -> None:
    lines = _log(ring, 5)
    swapped = [lines[0], lines[2], lines[1], lines[3], lines[4]]
    report = verify_log(swapped, _keys(ring))
    assert [p.sequence for p in report.problems][:1] == [3]
    removed = lines[:2] + lines[3:]
    report = verify_log(removed, _keys(ring))
    assert [p.sequence for p in report.problems] == [4]
    assert "missing" in report.problems[0].reason


def test_unknown_key_and_bad_shape_fail(ring: KeyRing, tmp_path: Path) -> None:
    other = KeyRing(tmp_path / "other")
    other.signer()
    with pytest.raises(VerificationError, match="no valid signature"):
        open_envelope(json.loads(_log(ring, 1)[0]), _keys(other))
    assert not verify_log([], _keys(ring)).ok


def test_rotation_keeps_old_receipts_verifiable(ring: KeyRing) -> None:
    old = _log(ring, 1)
    new_signer = ring.rotate()
    keys = _keys(ring)
    assert len(keys) == 2 and new_signer.key_id in keys
    assert verify_log(old, keys).ok
    statuses = {k.key_id: k.status for k in ring.public_keys()}
    assert statuses[new_signer.key_id] == "active"


def test_a_log_missing_its_first_receipt_is_reported(ring: KeyRing) -> None:
    lines = _log(ring, 4)
    report = verify_log(lines[1:], _keys(ring))
    assert not report.ok
    assert [(p.sequence, "missing" in p.reason) for p in report.problems] == [(2, True)]
    assert verify_log(lines[1:], _keys(ring), first_seq=2).ok  # a declared tail verifies


def test_a_genesis_receipt_citing_a_predecessor_is_reported(ring: KeyRing) -> None:
    signer = ring.signer()
    payload = canonical(statement(_submission(1), sequence=1, previous_digest="sha256:" + "0" * 64,
                                  profile_name="standard"))
    report = verify_log([envelope_json(payload, signer)], _keys(ring))
    assert [(p.sequence, "no previous" in p.reason) for p in report.problems] == [(1, True)]


def test_verify_cli_takes_a_starting_sequence(ring: KeyRing, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from controller.verify.cli import main

    log, key = tmp_path / "tail.jsonl", tmp_path / "key.pem"
    log.write_text("\n".join(_log(ring, 3)[1:]) + "\n")
    key.write_text("".join(k.pem for k in ring.public_keys()))
    assert main([str(log), "--key", str(key)]) == 1
    assert "seq 2" in capsys.readouterr().out
    assert main([str(log), "--key", str(key), "--from-seq", "2"]) == 0
