"""``GET /v1/checkpoint`` in process (a fake runtime, no Docker): any principal reads a signed
tree head that the independent verifier checks against the log the API serves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from controller.adapters.runtime.fake import FakeRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.principals import Principals
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.limits import RateLimiter
from controller.core.models import Role
from controller.service.dispatcher import Dispatcher
from controller.settings import Settings
from controller.verify.chain import verify_log
from controller.verify.checkpoint import CheckpointCheck
from controller.verify.dsse import load_public_keys
from tests.conftest import make_controller, python


@pytest.fixture
def api(tmp_path: Path) -> tuple[FastAPI, dict[str, str]]:
    controller = make_controller(tmp_path, FakeRuntime())
    for n in range(3):
        controller.submit(python(f"print({n})"))
    settings = Settings(data_dir=tmp_path)
    principals = Principals(settings.db_path)
    tokens = {role.value: principals.add(f"p-{role.value}", role) for role in Role}
    ctx = ApiContext(controller=controller, dispatcher=Dispatcher(controller, workers=1),
                     principals=principals, keyring=KeyRing(settings.keys_dir),
                     settings=settings, limiter=RateLimiter(100, 100))
    return create_app(ctx), tokens


def _call(app: FastAPI, path: str, token: str | None) -> httpx.Response:
    """One request through ASGI; the lifespan never runs, so nothing starts in background."""
    async def call() -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandgate") as client:
            return await client.get(path, headers=headers)
    return asyncio.run(call())


def _get(app: FastAPI, path: str, token: str) -> Any:
    response = _call(app, path, token)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("role", ["agent", "auditor", "admin", "approver"])
def test_every_principal_reads_a_checkpoint_that_verifies(
        api: tuple[FastAPI, dict[str, str]], role: str) -> None:
    app, tokens = api
    checkpoint = _get(app, "/v1/checkpoint", tokens[role])
    page = _get(app, "/v1/receipts", tokens["auditor"])
    keys = _get(app, "/v1/keys", tokens["auditor"])
    assert isinstance(page, dict) and isinstance(keys, list)
    lines = [json.dumps(envelope) for envelope in page["receipts"]]
    public = load_public_keys("".join(k["pem"] for k in keys).encode())
    check = CheckpointCheck(checkpoint, public)
    report = verify_log(lines, public, checks=[check])
    assert report.ok, report.problems
    assert check.checkpoint is not None and check.checkpoint.tree_size == 3
    shorter = verify_log(lines[:2], public, checks=[CheckpointCheck(checkpoint, public)])
    assert [p.reason for p in shorter.problems] == [
        "checkpoint (tree size 3): covers 3 receipts, but the log holds 2: its tail is "
        "missing (truncated)"]


def test_a_checkpoint_needs_a_key(api: tuple[FastAPI, dict[str, str]]) -> None:
    response = _call(api[0], "/v1/checkpoint", None)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
