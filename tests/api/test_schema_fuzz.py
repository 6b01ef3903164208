"""schemathesis against the service's own OpenAPI schema: no input may produce a 5xx, and
every answer conforms to the document: a declared status, media type, headers and body
schema (clients are generated from it); invalid input is refused, undeclared methods get a
405 with ``Allow``, and no route answers without credentials."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Server, make_server
from tests.conftest import owned_containers

pytestmark = pytest.mark.docker

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "ignored_auth",
    "missing_required_header",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API suite's service, but failed authentications are not throttled: the
    ``ignored_auth`` check sends many on purpose, and wants each answered 401, not 429."""
    running = make_server(tmp_path_factory.mktemp("fuzz"), "fuzz",
                          auth_failures_per_min="1000000")
    running.start()
    yield running
    running.stop()
    assert owned_containers(running.owner) == []


def test_every_generated_request_is_answered_as_the_schema_says(server: Server,
                                                                tmp_path: Path) -> None:
    tool = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert tool is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    key = server.principal("fuzzer", "admin")
    done = subprocess.run(
        [tool, "run", f"{server.url}/openapi.json", "--checks", ",".join(CHECKS),
         "--max-examples", "10", "--max-time", "90", "--rate-limit", "15/s", "--seed", "7",
         "--header", f"Authorization: Bearer {key}", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, check=False)
    tail = "\n".join(done.stdout.splitlines()[-60:])
    assert done.returncode == 0, tail
