"""Which key may sign which sequence number: the key schedule, read from the log itself.

The genesis receipt's key is active first. A key hands over to the next one in the first
receipt the new key signs: its predicate carries ``key_rotation``, a DSSE envelope of its own
payload type signed by the *outgoing* key, naming the incoming key and the sequence from which
it signs. From that sequence on the outgoing key is retired: a receipt it signs later is
refused, so a retired (or leaked) key cannot sign new sequence numbers, while every receipt it
signed while active keeps verifying.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.dsse import (
    HEX_SHA256,
    MAX_SEQUENCE,
    VerificationError,
    is_int,
    open_signed_json,
)
from controller.verify.formats import ROTATION_PAYLOAD_TYPE, ROTATION_TYPE
from controller.verify.report import Entry, Problem


@dataclass(frozen=True)
class Rotation:
    outgoing: str
    incoming: str
    from_sequence: int


def rotation_payload(outgoing: str, incoming: str, from_sequence: int) -> bytes:
    """The bytes the outgoing key signs. Sorted, compact JSON of plain ASCII strings and a
    small integer: the same bytes RFC 8785 gives, with the standard library alone."""
    return json.dumps({"_type": ROTATION_TYPE, "outgoing": outgoing, "incoming": incoming,
                       "from_sequence": from_sequence},
                      sort_keys=True, separators=(",", ":")).encode()


def open_rotation(record: Any, keys: dict[str, Ed25519PublicKey]) -> Rotation:
    """A rotation record whose signature by its own outgoing key verifies."""
    body, _, signers = open_signed_json(record, keys, ROTATION_PAYLOAD_TYPE)
    rotation = _rotation(body)
    if rotation.outgoing not in signers:
        raise VerificationError(f"not signed by its outgoing key {rotation.outgoing[:12]}")
    return rotation


def _rotation(body: Any) -> Rotation:
    if not isinstance(body, dict) or body.get("_type") != ROTATION_TYPE:
        raise VerificationError(f"payload is not a {ROTATION_TYPE} record")
    sequence = body.get("from_sequence")
    if not is_int(sequence) or not 1 <= sequence <= MAX_SEQUENCE:
        raise VerificationError(f"from_sequence {sequence!r} is not a positive integer")
    return Rotation(outgoing=_key_id(body, "outgoing"), incoming=_key_id(body, "incoming"),
                    from_sequence=sequence)


def _key_id(body: dict[str, Any], name: str) -> str:
    kid = body.get(name)
    if not isinstance(kid, str) or not HEX_SHA256.fullmatch(kid):
        raise VerificationError(f"{name} is not a key id (64 lowercase hex digits)")
    return kid


class KeySchedule:
    """Each receipt is signed by the key active at its sequence (a ``LogCheck``)."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], *, genesis: bool) -> None:
        self.keys = keys
        self.genesis = genesis  # the log starts at sequence 1: no key came before the first
        self.active: str | None = None
        self.retired: dict[str, int] = {}  # key id -> the sequence it was retired from

    def see(self, entry: Entry) -> list[Problem]:
        receipt = entry.receipt
        if receipt is None:
            return []  # its signature already failed; nothing to say about its key
        record = receipt.predicate.get("key_rotation")
        if record is not None:
            return self._rotate(entry, record)
        if self.active is None:
            self.active = receipt.key_id
        if receipt.key_id == self.active:
            return []
        return [Problem(entry.line, entry.sequence, self._unauthorised(receipt.key_id))]

    def finish(self) -> list[Problem]:
        return []

    def _unauthorised(self, kid: str) -> str:
        if kid in self.retired:
            return (f"signed by key {kid[:12]}, retired at sequence {self.retired[kid]}: a "
                    "retired key cannot sign new sequence numbers")
        active = (self.active or "?")[:12]
        return f"signed by key {kid[:12]}, but key {active} is active and no rotation " \
               "record hands over to it"

    def _rotate(self, entry: Entry, record: Any) -> list[Problem]:
        try:
            rotation = open_rotation(record, self.keys)
        except VerificationError as exc:
            return [Problem(entry.line, entry.sequence, f"key_rotation: {exc}")]
        refusal = self._refusal(rotation, entry)
        if refusal is not None:
            return [Problem(entry.line, entry.sequence, f"key_rotation: {refusal}")]
        self.retired[rotation.outgoing] = rotation.from_sequence
        self.active = rotation.incoming
        return []

    def _refusal(self, rotation: Rotation, entry: Entry) -> str | None:
        assert entry.receipt is not None
        if self.active is None and self.genesis:
            return "the first receipt of a log has no key to hand over from"
        if self.active is not None and rotation.outgoing != self.active:
            return (f"hands over from key {rotation.outgoing[:12]}, but key "
                    f"{self.active[:12]} is active")
        if rotation.incoming != entry.receipt.key_id:
            return (f"names incoming key {rotation.incoming[:12]}, but the receipt is signed "
                    f"by {entry.receipt.key_id[:12]}")
        if rotation.from_sequence != entry.receipt.sequence:
            return (f"valid from sequence {rotation.from_sequence}, but it is carried by "
                    f"sequence {entry.receipt.sequence}")
        if rotation.incoming == rotation.outgoing or rotation.incoming in self.retired:
            return f"key {rotation.incoming[:12]} was retired and cannot become active again"
        return None
