"""The CLI as a person runs it: run files, export receipts and keys, verify independently."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

pytestmark = pytest.mark.docker
BIN = Path(sys.executable).parent


def sandgate(data: Path, *args: str, tool: str = "sandgate") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDGATE_DATA_DIR": str(data)}
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_run_export_and_verify_with_two_verifiers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "hello.py").write_text("print('hi')\n")
    (tmp_path / "hello.sh").write_text("echo hi\n")
    (tmp_path / "evil.py").write_text("import os\nos.symlink('/etc', 'etc')\n")
    results = []
    for name in ("hello.py", "hello.sh", "evil.py"):
        done = sandgate(data, "run", str(tmp_path / name), "--json")
        assert done.returncode in (0, 1), done.stderr
        results.append(json.loads(done.stdout))
    assert [r["state"] for r in results] == ["committed", "committed", "denied"]
    assert results[0]["stdout"] == "hi\n" and results[1]["version_after"] == 2
    assert {"id", "state", "decisions", "stdout", "stderr", "receipt_seq"} <= set(results[0])
    assert [r["receipt_seq"] for r in results] == [1, 2, 3]
    run = next(d for d in results[2]["decisions"] if d["gate"] == "run")
    assert run["rules"][0]["id"] == "run.deny-escaping-symlink"

    receipts, keys = tmp_path / "receipts.jsonl", tmp_path / "keys.pem"
    assert sandgate(data, "receipts", "export", "--out", str(receipts)).returncode == 0
    assert sandgate(data, "keys", "export", "--out", str(keys)).returncode == 0
    verified = sandgate(data, str(receipts), "--key", str(keys), tool="sandgate-verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: 3 receipts checked" in verified.stdout

    lines = receipts.read_text().splitlines()
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(keys.read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keyid = json.loads(lines[0])["signatures"][0]["keyid"]
    key = SSlibKey(keyid=keyid, keytype="ed25519", scheme="ed25519",
                   keyval={"public": raw.hex()})
    for line in lines:
        assert keyid in Envelope.from_dict(json.loads(line)).verify([key], 1)

    envelope = json.loads(lines[1])
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[-5] ^= 0x01
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], json.dumps(envelope), lines[2]]) + "\n")
    bad = sandgate(data, str(tampered), "--key", str(keys), tool="sandgate-verify")
    assert bad.returncode == 1 and "BAD seq 2" in bad.stdout

    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    bad = sandgate(data, str(reordered), "--key", str(keys), tool="sandgate-verify")
    assert bad.returncode == 1 and "BAD seq 3" in bad.stdout

    removed = tmp_path / "removed.jsonl"
    removed.write_text("\n".join([lines[0], lines[2]]) + "\n")
    bad = sandgate(data, str(removed), "--key", str(keys), tool="sandgate-verify")
    assert bad.returncode == 1 and "BAD seq 3" in bad.stdout and "missing" in bad.stdout


def test_unknown_profile_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("print(1)\n")
    done = sandgate(tmp_path / "data", "run", str(tmp_path / "x.py"), "--profile", "nope")
    assert done.returncode == 2
    assert "unknown profile 'nope'" in done.stderr and "standard" in done.stderr
