"""Ed25519 signing keys on disk and DSSE envelopes: the only signer of receipts.

Keys live in ``<data>/keys`` as PKCS#8 PEM files named by key id, mode 0600; ``active`` names
the one that signs. Rotation adds a key and moves ``active``; old keys stay so that old
receipts keep verifying, and all public keys are exported. The log records each rotation
itself: the first receipt the new key signs carries a handover signed by the key that signed
the receipt before it (``controller/verify/keys.py`` says what the verifier makes of it).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.errors import SigningError
from controller.verify.checkpoint import checkpoint_payload, tree_head
from controller.verify.dsse import key_id, pae
from controller.verify.formats import (
    CHECKPOINT_PAYLOAD_TYPE,
    PAYLOAD_TYPE,
    ROTATION_PAYLOAD_TYPE,
)
from controller.verify.keys import rotation_payload

ACTIVE = "active"


class KeyStatus(StrEnum):
    ACTIVE = "active"  # signs new receipts
    RETIRED = "retired"  # signed earlier ones; kept to verify them


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    pem: str
    created: datetime
    status: KeyStatus


class Ed25519Signer:
    """A ``Signer`` holding one private key."""

    def __init__(self, private_key: Ed25519PrivateKey, ring: KeyRing | None = None) -> None:
        self._key = private_key
        self._key_id = key_id(private_key.public_key())
        self._ring = ring  # holds the keys this one took over from

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def envelope(self, payload: bytes) -> str:
        return envelope_json(payload, self)

    def handover(self, outgoing: str | None, sequence: int) -> dict[str, Any] | None:
        """The rotation record a receipt at ``sequence`` must carry when ``outgoing`` (the key
        of the receipt before it) is not this one; None when no key changes hands."""
        if outgoing is None or outgoing == self._key_id:
            return None
        if self._ring is None:
            raise SigningError(f"receipt {sequence - 1} was signed by key {outgoing[:12]}, and "
                               "this signer has no key ring to hand over from it")
        return self._ring.handover(outgoing, self, sequence)


class KeyRing:
    """The signing keys of one data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def signer(self, *, create: bool = True) -> Ed25519Signer:
        """The active key, generated on first use when ``create``.

        Pass ``create=False`` once receipts exist: a key that vanished must stop the
        controller, not be silently replaced by one no old receipt was signed with.
        """
        active = self.directory / ACTIVE
        if not active.exists():
            if not create:
                raise SigningError(f"no active signing key in {self.directory}")
            return self.rotate()
        try:
            kid = active.read_text().strip()
            return Ed25519Signer(self._load(kid), ring=self)
        except OSError as exc:
            raise SigningError(f"cannot read the active signing key: {exc}") from exc

    def rotate(self) -> Ed25519Signer:
        """Generate a new key and make it active; older keys remain for verification."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        signer = Ed25519Signer(key, ring=self)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = self.directory / f"{signer.key_id}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        temporary = self.directory / f".{ACTIVE}.tmp"
        temporary.write_text(signer.key_id + "\n")
        os.replace(temporary, self.directory / ACTIVE)
        return signer

    def handover(self, outgoing: str, incoming: Ed25519Signer,
                 sequence: int) -> dict[str, Any]:
        """A rotation record: ``outgoing`` signs that ``incoming`` signs from ``sequence``.

        Only the active key takes over. A process still holding a key another process rotated
        away from must not hand the log back to it (the verifier would refuse every receipt
        after), so it stops with an error until it is restarted with the active key.
        """
        active = self._active_id()
        if active != incoming.key_id:
            raise SigningError(
                f"this process signs with key {incoming.key_id[:12]}, but the active key of "
                f"{self.directory} is now {active[:12] or 'missing'}: it was rotated; restart "
                "this process to sign with the active key")
        payload = rotation_payload(outgoing, incoming.key_id, sequence)
        return envelope(payload, Ed25519Signer(self._load(outgoing)),
                        payload_type=ROTATION_PAYLOAD_TYPE)

    def signer_for(self, kid: str | None) -> Ed25519Signer:
        """The signer of key ``kid`` (the active one when None), never generating a key."""
        if kid is None:
            return self.signer(create=False)
        return Ed25519Signer(self._load(kid), ring=self)

    def checkpoint(self, digests: Sequence[str], last_signer: str | None) -> str:
        """A signed tree head over receipts with these payload digests (sequence order),
        signed by ``last_signer``, the key that signed the last of them: the log names that
        key active at the tree's size, even when a newer key is waiting to sign the next."""
        payload = checkpoint_payload(len(digests), tree_head(digests),
                                     datetime.now(UTC).isoformat())
        return envelope_json(payload, self.signer_for(last_signer),
                             payload_type=CHECKPOINT_PAYLOAD_TYPE)

    def _active_id(self) -> str:
        try:
            return (self.directory / ACTIVE).read_text().strip()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise SigningError(f"cannot read the active signing key: {exc}") from exc

    def public_keys(self) -> list[PublicKeyInfo]:
        active = (self.directory / ACTIVE).read_text().strip() \
            if (self.directory / ACTIVE).exists() else ""
        infos = []
        for path in sorted(self.directory.glob("*.pem")):
            public = self._load(path.stem).public_key()
            pem = public.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            infos.append(PublicKeyInfo(
                key_id=path.stem, pem=pem,
                created=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                status=KeyStatus.ACTIVE if path.stem == active else KeyStatus.RETIRED))
        return infos

    def _load(self, kid: str) -> Ed25519PrivateKey:
        path = self.directory / f"{kid}.pem"
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SigningError(f"{path} has mode {mode:o}: a signing key must be 0600")
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot load signing key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey) or key_id(key.public_key()) != kid:
            raise SigningError(f"{path} is not the Ed25519 key its name says")
        return key


def envelope(payload: bytes, signer: Ed25519Signer, *,
             payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """A DSSE envelope over ``payload`` (canonical in-toto Statement JSON, unless
    ``payload_type`` says it is a rotation record or a checkpoint)."""
    signature = signer.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signature).decode()}],
    }


def envelope_json(payload: bytes, signer: Ed25519Signer, *,
                  payload_type: str = PAYLOAD_TYPE) -> str:
    """The envelope as stored and exported: one line of compact JSON."""
    return json.dumps(envelope(payload, signer, payload_type=payload_type),
                      separators=(",", ":"))
