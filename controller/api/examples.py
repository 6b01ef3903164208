"""Examples /openapi.json shows (each is checked against its schema by the API tests)."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

SUBMISSION_ID = "e9a455d1c72a4d2eaded1180fbed400a"
BUNDLE = {"bundle_name": "default", "bundle_version": "1.0.0", "bundle_digest": (
    "sha256:e6f826f435beed4008a6027170a22827d31320c721c74c28c881e1172de6f981")}
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
NO_CHANGES = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"

SUBMIT: dict[str, Example] = {
    "python": {"summary": "Python in the caller's default workspace",
               "value": {"language": "python", "code": "print('hello')"}},
    "files": {"summary": "Shell, with a file placed first, in a named workspace, labelled",
              "value": {"language": "sh", "code": "wc -l data.txt > count.txt",
                        "workspace": "reports", "profile": "standard",
                        "files": [{"path": "data.txt", "content": "a\nb\n"}],
                        "labels": {"ticket": "OPS-12"}}},
}


def _decision(gate: str, rule: str, reason: str, at: str) -> dict[str, Any]:
    return {"gate": gate, "outcome": "PERMIT", "rules": [{"id": rule, "reason": reason}],
            "errors": [], **BUNDLE, "effect": None, "shadow": None, "decided_at": at}


def _run(phase: str, stdout: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": phase, "exit_code": 0, "signal": None, "oom_killed": False,
        "timed_out": False, "seccomp_killed": False, "pids_limit_hit": False,
        "peak_memory_bytes": 6_291_456, "cpu_time_ns": 18_000_000, "peak_pids": 1,
        "loopback_packets": 0, "wall_time_ms": 412.5, "stdout": stdout,
        "stderr": {"size": 0, "sha256": EMPTY_SHA256, "truncated": False},
        "image_id": "sha256:2d8931e9df07583db778da31ea754daa367608cbf5b30ca9b44d246c218d96d9",
        "container_changes": None, "audit_checks": 12, "audit_source": "audit_netlink",
        "incomplete": None, "uid": 10888,
        "diff": {"created": 0, "modified": 0, "deleted": 0, "setuid_files": 0,
                 "device_nodes": 0, "escaping_symlinks": 0, "hardlinks": 0,
                 "special_files": 0, "size_after": 0, "files_after": 0,
                 "changes_sha256": NO_CHANGES, "hazard_sample": []},
        "limits_hit": []}


_HELLO = {"size": 6, "sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
          "truncated": False}
_BASE = f"/v1/submissions/{SUBMISSION_ID}"
_NO_CHANGES = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"  # sha256 of []
_NO_PATHS = _NO_CHANGES
SUBMISSION: dict[str, Any] = {
    "id": SUBMISSION_ID, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "state": "committed",
    "reason": "committed", "agent": "alice",
    "language": "python", "workspace": "default", "profile": "standard",
    "created_at": "2025-06-01T12:00:00.973365Z", "updated_at": "2025-06-01T12:00:01.846554Z",
    "decisions": [
        _decision("submit", "submit.permit-known-languages",
                  "python and sh are the languages Sandgate runs", "2025-06-01T12:00:00.979563Z"),
        _decision("run", "run.permit-ordinary", "the dry run showed nothing this bundle forbids",
                  "2025-06-01T12:00:01.417385Z"),
        _decision("run_unattended", "run_unattended.permit",
                  "no rule of this bundle asks for a human", "2025-06-01T12:00:01.422328Z"),
        _decision("commit", "commit.permit-valid",
                  "the run's effects are within this bundle's rules",
                  "2025-06-01T12:00:01.843005Z")],
    "dry_run": _run("dry_run", _HELLO), "bounded_run": _run("bounded", _HELLO),
    "radius": {"paths_sha256": _NO_CHANGES, "created": 0, "modified": 0, "deleted": 0,
               "hazardous": False, "exit_code": 0,
               "totals": {"size_after": 0, "peak_memory_bytes": 9576448, "peak_pids": 1,
                          "cpu_time_ns": 21874000, "loopback_packets": 0,
                          "stdout_bytes": 6, "stderr_bytes": 0},
               "sha256": "f4f1ff5497857e1c0152a153b2c52fea93ce5dea886f944a710feaefcafc8502"},
    "divergence": {"diverged": False, "outside_paths": 0, "found": {
        "created_outside": 0, "modified_outside": 0, "deleted_outside": 0, "kind_changed": 0,
        "mode_changed": 0, "paths_sha256": _NO_PATHS, "sample": [], "roots": [],
        "totals_over": [],
        "new_hazard": False, "exit_changed": False, "network_new": False,
        "content_changed": 0, "content_roots": [], "dry_only": 0}},
    "violations": [], "stdout": "hello\n", "stderr": "", "version_before": 0,
    "version_after": 1, "receipt_seq": 1,
    "links": {"self": _BASE, "events": f"{_BASE}/events",
              "receipt": f"/v1/receipts/{SUBMISSION_ID}", "diff": f"{_BASE}/diff",
              "stdout": f"{_BASE}/outputs/stdout", "stderr": f"{_BASE}/outputs/stderr",
              "code": f"{_BASE}/code"},
}

KEY_ID = "fb34c5c1731ea68b80ccb6b37afbab9446322d5fe117aceab440dc6df6097ceb"
ENVELOPE: dict[str, Any] = {
    "payloadType": "application/vnd.in-toto+json",
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJwcmVkaWNhdGVUeXBlI"
               "joiaHR0cHM6Ly9zYW5kZ2F0ZS5kZXYvcmVjZWlwdC92MSJ9",
    "signatures": [{"keyid": KEY_ID, "sig": "e3CYhm9nMCDhfThZcOkqO9QifmTUWRrnnFIbtFxDTh3T7nZ7dgC"
                                            "BrlHp56J1f/5ezGb/NWK1o7zjuPvcj8ybAg=="}],
}
KEY: dict[str, Any] = {
    "key_id": KEY_ID, "status": "active", "created": "2025-06-01T11:58:02.118231Z",
    "pem": "-----BEGIN PUBLIC KEY-----\n"
           "MCowBQYDK2VwAyEAq2m8Zc0Vv0Yq8b9O9k2QH6Jf3h9mY4Z1w7sXo0c5r0E=\n"
           "-----END PUBLIC KEY-----\n",
}

PRINCIPAL: dict[str, Any] = {"principal": "audrey", "role": "auditor", "sees": "all"}
STATUS: dict[str, Any] = {"queue": {"waiting": 3, "running": 4, "workers": 4, "capacity": 68,
                                    "principals": 2}, "draining": False}
PROFILE_LINT: dict[str, Any] = {
    "file": "standard.yaml", "profile": "standard", "loaded": True,
    "digest": "sha256:8d2c3f0e4a1b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d",
    "findings": [{"level": "warning", "where": "/etc/sandgate/profiles/standard.yaml",
                  "message": "network is on: the bounded run gets a bridge network"}]}
