"""schemathesis against the service's own OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import Server

pytestmark = pytest.mark.docker


def test_no_generated_request_gets_a_5xx(server: Server, tmp_path: Path) -> None:
    tool = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert tool is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    key = server.principal("fuzzer", "admin")
    done = subprocess.run(
        [tool, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "10", "--max-time", "90", "--rate-limit", "15/s", "--seed", "7",
         "--header", f"Authorization: Bearer {key}", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, check=False)
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, tail
