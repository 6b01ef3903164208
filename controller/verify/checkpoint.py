"""Signed checkpoints: a tree head (RFC 6962 Merkle tree hash) over the whole receipt log.

The leaves are the receipts in sequence order; a leaf's input is the 32 raw bytes of the
sha256 of the receipt's signed payload (the digest the hash chain uses). A checkpoint is a
DSSE envelope of its own payload type, signed by the key that signed the receipt at its tree
size, over ``{"_type", "tree_size", "root_hash", "issued_at"}``. A log verified against it
must hold at least ``tree_size`` receipts whose first ``tree_size`` give ``root_hash``: a
truncated tail, or any receipt changed, removed or reordered in it, is found.

The signer builds checkpoints with these functions too, so writer and verifier cannot drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller.verify.dsse import (
    DIGEST,
    HEX_SHA256,
    VerificationError,
    is_int,
    open_signed_json,
)
from controller.verify.formats import CHECKPOINT_PAYLOAD_TYPE, CHECKPOINT_TYPE
from controller.verify.report import Entry, Problem


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: str  # hex
    issued_at: str
    key_id: str  # the given key whose signature verified


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962: a leaf is hashed with a 0x00 prefix, so it can never pass for a node."""
    return hashlib.sha256(b"\x00" + data).digest()


def receipt_leaf(digest: str) -> bytes:
    """The leaf of one receipt, from its payload digest ``sha256:<hex>``."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} is not sha256:<64 hex digits>")
    return leaf_hash(bytes.fromhex(digest.removeprefix("sha256:")))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over leaf hashes. Built level by level, a lone last node
    rising unpaired: the same tree as the RFC's split at the largest power of two."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def tree_head(digests: Sequence[str]) -> str:
    """The root hash (hex) of the log whose receipts have these payload digests, in order."""
    return merkle_root([receipt_leaf(digest) for digest in digests]).hex()


def checkpoint_payload(tree_size: int, root_hash: str, issued_at: str) -> bytes:
    """The signed bytes: sorted, compact JSON (what RFC 8785 gives for these plain values)."""
    return json.dumps({"_type": CHECKPOINT_TYPE, "tree_size": tree_size,
                       "root_hash": root_hash, "issued_at": issued_at},
                      sort_keys=True, separators=(",", ":")).encode()


def open_checkpoint(envelope: Any, keys: dict[str, Ed25519PublicKey]) -> Checkpoint:
    """A checkpoint whose signature (by one of ``keys``) and shape verify."""
    body, _, signers = open_signed_json(envelope, keys, CHECKPOINT_PAYLOAD_TYPE)
    if not isinstance(body, dict) or body.get("_type") != CHECKPOINT_TYPE:
        raise VerificationError(f"payload is not a {CHECKPOINT_TYPE}")
    size, root, issued = body.get("tree_size"), body.get("root_hash"), body.get("issued_at")
    if not is_int(size) or size < 0:
        raise VerificationError(f"tree_size {size!r} is not a non-negative integer")
    if not isinstance(root, str) or not HEX_SHA256.fullmatch(root):
        raise VerificationError("root_hash is not 64 lowercase hex digits")
    if not isinstance(issued, str):
        raise VerificationError("issued_at is not a string")
    return Checkpoint(tree_size=size, root_hash=root, issued_at=issued, key_id=signers[0])


class CheckpointCheck:
    """The log holds every receipt a checkpoint covers, unchanged (a ``LogCheck``)."""

    def __init__(self, envelope: Any, keys: dict[str, Ed25519PublicKey]) -> None:
        self.error = ""
        self.checkpoint: Checkpoint | None = None
        try:
            self.checkpoint = open_checkpoint(envelope, keys)
        except VerificationError as exc:
            self.error = str(exc)
        self.leaves: list[bytes] = []
        self.unreadable: Entry | None = None  # the first covered receipt with no digest
        self.signer_at_size: str | None = None

    def see(self, entry: Entry) -> list[Problem]:
        if self.checkpoint is None or entry.index > self.checkpoint.tree_size:
            return []
        if entry.digest is None:
            self.unreadable = self.unreadable or entry
        else:
            self.leaves.append(receipt_leaf(entry.digest))
        if entry.index == self.checkpoint.tree_size and entry.receipt is not None:
            self.signer_at_size = entry.receipt.key_id
        return []

    def finish(self) -> list[Problem]:
        checkpoint = self.checkpoint
        if checkpoint is None:
            return [Problem(None, None, f"checkpoint: {self.error}")]
        reason = self._mismatch(checkpoint)
        if reason is None:
            return []
        return [Problem(None, checkpoint.tree_size,
                        f"checkpoint (tree size {checkpoint.tree_size}): {reason}")]

    def _mismatch(self, checkpoint: Checkpoint) -> str | None:
        size = checkpoint.tree_size
        covered = len(self.leaves) + (self.unreadable is not None)
        if covered < size:
            return f"covers {size} receipts, but the log holds {covered}: its tail is " \
                   "missing (truncated)"
        if self.unreadable is not None:
            return f"the receipt at line {self.unreadable.line} cannot be decoded, so the " \
                   "root cannot be recomputed"
        if merkle_root(self.leaves).hex() != checkpoint.root_hash:
            return f"root hash does not match the log's first {size} receipts (one was " \
                   "changed, removed or reordered)"
        expected = self.signer_at_size
        if expected is not None and checkpoint.key_id != expected:
            return f"signed by key {checkpoint.key_id[:12]}, but key {expected[:12]} " \
                   "signed the receipt at its tree size"
        return None
