"""Signed checkpoints (RFC 6962 tree heads) and key rotation as the writer does them: the
service's log, rotated and exported, verifies; a truncated or altered copy does not."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.errors import SigningError
from controller.service.controller import Controller
from controller.verify.chain import verify_log
from controller.verify.checkpoint import CheckpointCheck, leaf_hash, merkle_root
from controller.verify.cli import main
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python
from tests.unit.test_verifier import Log, dumps, keys_of, sign

CHECKPOINT_TYPE = "application/vnd.sandgate.checkpoint+json"

# RFC 6962 test vectors (certificate-transparency's reference leaves and roots).
LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
          "606162636465666768696a6b6c6d6e6f"]
ROOTS = ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
         "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_merkle_root_matches_rfc6962(size: int) -> None:
    leaves = [leaf_hash(bytes.fromhex(data)) for data in LEAVES[:size]]
    assert merkle_root(leaves).hex() == ROOTS[size]


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, word for word: split at the largest power of two below n."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _reference_root(leaves[:split])
                          + _reference_root(leaves[split:])).digest()


def test_merkle_root_matches_the_rfc_recursion_for_every_shape() -> None:
    leaves = [leaf_hash(bytes([n])) for n in range(70)]
    for size in range(1, len(leaves) + 1):
        assert merkle_root(leaves[:size]) == _reference_root(leaves[:size]), size


def checkpoint_over(log: Log, key: Ed25519PrivateKey, size: int | None = None) -> dict[str, Any]:
    """A checkpoint made here, from the documented format: leaves are the 32-byte sha256 of
    each receipt's payload."""
    lines = log.lines[:size] if size is not None else log.lines
    leaves = [leaf_hash(hashlib.sha256(_payload(line)).digest()) for line in lines]
    body = {"_type": "https://sandgate.dev/checkpoint/v1", "tree_size": len(lines),
            "root_hash": _reference_root(leaves).hex() if leaves else ROOTS[0],
            "issued_at": "2025-01-01T00:00:00+00:00"}
    return sign(dumps(body), key, CHECKPOINT_TYPE)


def _payload(line: str) -> bytes:
    return base64.b64decode(json.loads(line)["payload"])


def _checked(log: Log, checkpoint: dict[str, Any], *keys: Ed25519PrivateKey) -> list[str]:
    report = verify_log(log.lines, keys_of(*keys),
                        checks=[CheckpointCheck(checkpoint, keys_of(*keys))])
    return [problem.reason for problem in report.problems]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def five(key: Ed25519PrivateKey) -> Log:
    log = Log()
    for _ in range(5):
        log.add(key)
    return log


def test_a_checkpoint_over_a_longer_log_detects_truncation(key: Ed25519PrivateKey) -> None:
    log = five(key)
    checkpoint = checkpoint_over(log, key)
    assert _checked(log, checkpoint, key) == []
    log.lines.pop()  # the tail is cut: every remaining receipt still verifies on its own
    assert verify_log(log.lines, keys_of(key)).ok
    assert _checked(log, checkpoint, key) == [
        "checkpoint (tree size 5): covers 5 receipts, but the log holds 4: its tail is "
        "missing (truncated)"]


def test_a_log_that_grew_past_its_checkpoint_verifies(key: Ed25519PrivateKey) -> None:
    log = five(key)
    assert _checked(log, checkpoint_over(log, key, size=3), key) == []


def test_a_checkpoint_detects_a_replaced_receipt(key: Ed25519PrivateKey) -> None:
    log = five(key)
    checkpoint = checkpoint_over(log, key)
    log.lines.pop()
    log.previous = "sha256:" + hashlib.sha256(_payload(log.lines[-1])).hexdigest()
    log.add(key, "another")  # signed and chained like the one it replaces
    assert verify_log(log.lines, keys_of(key)).ok
    found = _checked(log, checkpoint, key)
    assert len(found) == 1 and "root hash does not match" in found[0]


def test_a_checkpoint_is_signed_by_the_key_at_its_tree_size(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    log = five(key)
    found = _checked(log, checkpoint_over(log, other), key, other)
    assert len(found) == 1 and "but key" in found[0] and "signed the receipt at its tree size" \
        in found[0]
    unknown = _checked(log, checkpoint_over(log, other), key)
    assert len(unknown) == 1 and unknown[0].startswith("checkpoint: no valid signature")


def test_a_checkpoint_with_a_bool_tree_size_is_refused(key: Ed25519PrivateKey) -> None:
    log = Log()
    log.add(key)
    body = {"_type": "https://sandgate.dev/checkpoint/v1", "tree_size": True,
            "root_hash": ROOTS[1], "issued_at": "now"}
    found = _checked(log, sign(dumps(body), key, CHECKPOINT_TYPE), key)
    assert found == ["checkpoint: tree_size True is not a non-negative integer"]


# The writer: the service seals, rotates and checkpoints; the verifier accepts the result.

def _controller(data: Path) -> Controller[Store, ShadowedEngine]:
    return make_controller(data, FakeRuntime())


def _exported(controller: Controller[Store, ShadowedEngine]) -> list[str]:
    return [envelope for _, envelope in controller.store.receipts()]


def _all_keys(data: Path) -> dict[str, Any]:
    return load_public_keys("".join(k.pem for k in KeyRing(data / "keys").public_keys()).encode())


def test_the_service_records_a_rotation_in_the_log(tmp_path: Path) -> None:
    first = _controller(tmp_path)
    for _ in range(2):
        first.submit(python("print(1)"))
    outgoing = first.sealer.signer.key_id
    incoming = KeyRing(tmp_path / "keys").rotate().key_id
    second = _controller(tmp_path)  # a restart: the controller now holds the new key
    for _ in range(2):
        second.submit(python("print(2)"))
    lines = _exported(second)
    predicates = [json.loads(_payload(line))["predicate"] for line in lines]
    assert [p.get("key_rotation") is not None for p in predicates] == [False, False, True, False]
    record = json.loads(_payload(json.dumps(predicates[2]["key_rotation"])))
    assert record == {"_type": "https://sandgate.dev/key-rotation/v1", "outgoing": outgoing,
                      "incoming": incoming, "from_sequence": 3}
    assert verify_log(lines, _all_keys(tmp_path)).ok


def test_a_process_holding_a_rotated_away_key_does_not_sign_over_the_new_one(
        tmp_path: Path) -> None:
    stale = _controller(tmp_path)
    stale.submit(python("print(1)"))
    KeyRing(tmp_path / "keys").rotate()
    _controller(tmp_path).submit(python("print(2)"))  # the new key hands over at 2
    # Handing the log back to the old key would make every later receipt unverifiable:
    # the stale process leaves its submission unfinished (reconciled after a restart).
    with pytest.raises(SigningError, match="restart this process"):
        stale.submit(python("print(3)"))
    assert stale.store.receipt_count() == 2 and len(stale.store.unfinished()) == 1
    assert verify_log(_exported(stale), _all_keys(tmp_path)).ok


def test_a_handover_from_a_key_the_ring_lacks_is_an_error(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    with pytest.raises(SigningError, match="cannot load signing key"):
        controller.sealer.signer.handover("ab" * 32, 2)


def test_exported_log_and_checkpoint_verify_and_a_truncated_copy_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli.main import main as sandgate

    data = tmp_path / "data"
    controller = _controller(data)
    for _ in range(3):
        controller.submit(python("print(1)"))
    KeyRing(data / "keys").rotate()
    _controller(data).submit(python("print(2)"))
    monkeypatch.setenv("SANDGATE_DATA_DIR", str(data))
    log, checkpoint, keys = tmp_path / "log.jsonl", tmp_path / "cp.json", tmp_path / "keys.pem"
    assert sandgate(["receipts", "export", "--out", str(log),
                     "--checkpoint", str(checkpoint)]) == 0
    assert sandgate(["keys", "export", "--out", str(keys)]) == 0
    capsys.readouterr()
    assert main([str(log), "--key", str(keys), "--checkpoint", str(checkpoint)]) == 0
    assert "checkpoint holds: tree size 4" in capsys.readouterr().out

    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:3]))
    assert main([str(log), "--key", str(keys)]) == 0  # alone, the cut log looks whole
    assert main([str(log), "--key", str(keys), "--checkpoint", str(checkpoint)]) == 1
    assert "BAD checkpoint (tree size 4): covers 4 receipts, but the log holds 3" in \
        capsys.readouterr().out
