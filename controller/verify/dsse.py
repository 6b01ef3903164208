"""DSSE envelopes over in-toto Statements, signed with Ed25519: the receipt format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.formats import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    TERMINAL_STATES,
)

REQUIRED_PREDICATE = {
    "submission_id": str,
    "trace_id": str,
    "agent": str,
    "state": str,
    "decisions": list,
    "sequence": int,
    "controller_version": str,
    "workspace": dict,
    "profile": dict,
}


class VerificationError(Exception):
    """A receipt that does not verify; the message says which check failed."""


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


def open_envelope(envelope: Any, keys: dict[str, Ed25519PublicKey]) -> tuple[dict[str, Any], bytes]:
    """Check an envelope's signature and statement shape; return (statement, payload)."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
        raise VerificationError(f"not a DSSE envelope with payloadType {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [(s["keyid"], base64.b64decode(s["sig"], validate=True))
                      for s in envelope["signatures"]]
    except (KeyError, TypeError, binascii.Error) as exc:
        raise VerificationError(f"malformed envelope: {exc}") from exc
    message = pae(PAYLOAD_TYPE, payload)
    if not any(_verifies(keys.get(kid), sig, message) for kid, sig in signatures):
        known = ", ".join(kid[:12] for kid, _ in signatures) or "none"
        raise VerificationError(f"no valid signature by a given key (signed by: {known})")
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise VerificationError(f"payload is not JSON: {exc}") from exc
    check_statement(statement)
    return statement, payload


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
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str)
        and isinstance(s.get("digest", {}).get("sha256"), str) for s in subjects
    ):
        raise VerificationError("subject must be a non-empty list of {name, digest.sha256}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"predicateType must be {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise VerificationError("predicate must be an object")
    for name, kind in REQUIRED_PREDICATE.items():
        if not isinstance(predicate.get(name), kind):
            raise VerificationError(f"predicate.{name} is missing or not a {kind.__name__}")
    if predicate["state"] not in TERMINAL_STATES:
        raise VerificationError(f"predicate.state {predicate['state']!r} is not terminal")
