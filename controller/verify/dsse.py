"""DSSE envelopes over in-toto Statements, signed with Ed25519: the receipt format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.formats import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    TERMINAL_STATES,
)

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# RFC 8785 carries integers exactly only up to 2^53 - 1: the writer cannot sign a larger one.
MAX_SEQUENCE = 2**53 - 1
# Checked when present. A minimal receipt (sealed when the full one cannot be built) carries
# only submission_id, state, sequence and previous_receipt_digest for certain.
OPTIONAL_PREDICATE: dict[str, type] = {
    "trace_id": str,
    "agent": str,
    "reason": str,
    "decisions": list,
    "controller_version": str,
    "workspace": dict,
    "profile": dict,
    "minimal": bool,
    "key_rotation": dict,
}


class VerificationError(Exception):
    """A receipt that does not verify; the message says which check failed."""


@dataclass(frozen=True)
class Receipt:
    """A receipt whose signature and shape verified."""

    statement: dict[str, Any]
    payload: bytes
    key_id: str  # the given key whose signature verified

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.statement["predicate"]
        return predicate

    @property
    def sequence(self) -> int:
        return int(self.predicate["sequence"])

    @property
    def submission_id(self) -> str:
        return str(self.predicate["submission_id"])


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_keys(pem_data: bytes) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (several may follow each other), by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    marker = b"-----END PUBLIC KEY-----"
    for block in pem_data.split(marker):
        if b"-----BEGIN PUBLIC KEY-----" not in block:
            continue
        key = serialization.load_pem_public_key(block + marker + b"\n")
        if not isinstance(key, Ed25519PublicKey):
            raise VerificationError("only Ed25519 public keys sign Sandgate receipts")
        keys[key_id(key)] = key
    if not keys:
        raise VerificationError("no PEM public key found")
    return keys


def payload_digest(payload: bytes) -> str:
    """The digest a receipt is chained by: sha256 of its signed payload bytes."""
    return f"sha256:{hashlib.sha256(payload).hexdigest()}"


def strict_json(data: bytes | str) -> Any:
    """Parse JSON that has one reading only: a duplicate key or a NaN, which two parsers may
    read differently, is refused rather than interpreted."""
    return json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"duplicate key {duplicate!r}")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_int(value: object) -> TypeGuard[int]:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def open_signed(envelope: Any, keys: dict[str, Ed25519PublicKey],
                payload_type: str) -> tuple[bytes, tuple[str, ...]]:
    """Check a DSSE envelope of ``payload_type``; return its payload and the ids of the given
    keys whose signature over it verifies (at least one, or ``VerificationError``)."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != payload_type:
        raise VerificationError(f"not a DSSE envelope with payloadType {payload_type}")
    payload = envelope_payload(envelope)
    if payload is None:
        raise VerificationError("malformed envelope: payload is not base64")
    message = pae(payload_type, payload)
    signatures = _signatures(envelope)
    signers = tuple(kid for kid, sig in signatures if _verifies(keys.get(kid), sig, message))
    if not signers:
        known = ", ".join(kid[:12] for kid, _ in signatures) or "none"
        raise VerificationError(f"no valid signature by a given key (signed by: {known})")
    return payload, signers


def envelope_payload(envelope: Any) -> bytes | None:
    """The payload bytes of an envelope, verified or not (None when they cannot be decoded)."""
    encoded = envelope.get("payload") if isinstance(envelope, dict) else None
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _signatures(envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    entries = envelope.get("signatures")
    if not isinstance(entries, list) or not all(
            isinstance(s, dict) and isinstance(s.get("keyid"), str)
            and isinstance(s.get("sig"), str) for s in entries):
        raise VerificationError("malformed envelope: signatures must be a list of "
                                "{keyid, sig} strings")
    try:
        return [(s["keyid"], base64.b64decode(s["sig"], validate=True)) for s in entries]
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"malformed envelope: {exc}") from exc


def open_signed_json(envelope: Any, keys: dict[str, Ed25519PublicKey],
                     payload_type: str) -> tuple[Any, bytes, tuple[str, ...]]:
    """``open_signed``, and the payload parsed as strict JSON."""
    payload, signers = open_signed(envelope, keys, payload_type)
    try:
        return strict_json(payload), payload, signers
    except ValueError as exc:
        raise VerificationError(f"payload is not JSON: {exc}") from exc


def open_receipt(envelope: Any, keys: dict[str, Ed25519PublicKey]) -> Receipt:
    """Check a receipt's signature and statement shape."""
    statement, payload, signers = open_signed_json(envelope, keys, PAYLOAD_TYPE)
    check_statement(statement)
    return Receipt(statement=statement, payload=payload, key_id=signers[0])


def open_envelope(envelope: Any, keys: dict[str, Ed25519PublicKey]) -> tuple[dict[str, Any], bytes]:
    """Check an envelope's signature and statement shape; return (statement, payload)."""
    receipt = open_receipt(envelope, keys)
    return receipt.statement, receipt.payload


def _verifies(key: Ed25519PublicKey | None, signature: bytes, message: bytes) -> bool:
    if key is None:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def check_statement(statement: Any) -> None:
    """The in-toto Statement v1 shape, and the fields every Sandgate predicate carries."""
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"payload is not an in-toto Statement ({STATEMENT_TYPE})")
    _check_subjects(statement.get("subject"))
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"predicateType must be {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise VerificationError("predicate must be an object")
    _check_predicate(predicate)


def _check_subjects(subjects: Any) -> None:
    if not isinstance(subjects, list) or not subjects or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get("sha256"), str)
        and HEX_SHA256.fullmatch(s["digest"]["sha256"]) for s in subjects
    ):
        raise VerificationError("subject must be a non-empty list of {name, digest.sha256} "
                                "with 64 lowercase hex digits each")


def _check_predicate(predicate: dict[str, Any]) -> None:
    submission_id = predicate.get("submission_id")
    if not isinstance(submission_id, str) or not submission_id:
        raise VerificationError("predicate.submission_id is missing or not a non-empty string")
    if predicate.get("state") not in TERMINAL_STATES:
        raise VerificationError(f"predicate.state {predicate.get('state')!r} is not terminal")
    sequence = predicate.get("sequence")
    if not is_int(sequence) or not 1 <= sequence <= MAX_SEQUENCE:
        raise VerificationError(f"predicate.sequence {sequence!r} is not a positive integer")
    if "previous_receipt_digest" not in predicate:
        raise VerificationError("predicate.previous_receipt_digest is missing (null only in "
                                "the first receipt)")
    previous = predicate["previous_receipt_digest"]
    if previous is not None and not (isinstance(previous, str) and DIGEST.fullmatch(previous)):
        raise VerificationError(f"predicate.previous_receipt_digest {previous!r} is not "
                                "null or sha256:<64 hex digits>")
    for name, kind in OPTIONAL_PREDICATE.items():
        value = predicate.get(name)
        if value is not None and not isinstance(value, kind):
            raise VerificationError(f"predicate.{name} is not a {kind.__name__}")
