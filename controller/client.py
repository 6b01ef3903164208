"""A small synchronous client for agents (httpx): submit, wait, stream events, fetch receipts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

TERMINAL = frozenset({"committed", "rolled_back", "quarantined", "denied"})


class ClientError(Exception):
    """The API answered with an error: ``status``, stable ``code`` and the message."""

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class SandgateClient:
    def __init__(self, url: str, key: str, *, timeout: float = 90.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {key}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandgateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, code: str, *, language: str = "python", files: list[dict[str, Any]] | None
               = None, workspace: str = "default", profile: str = "standard",
               labels: dict[str, str] | None = None, wait: float = 0,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """POST a submission; with ``wait`` > 0 the answer may already be terminal."""
        body = {"language": language, "code": code, "files": files or [],
                "workspace": workspace, "profile": profile, "labels": labels or {}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json(self._http.post("/v1/submissions", json=body, headers=headers,
                                               params={"wait": wait} if wait else None)))

    def get(self, submission_id: str) -> dict[str, Any]:
        return dict(self._json(self._http.get(f"/v1/submissions/{submission_id}")))

    def wait(self, submission_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until the submission is terminal (or ``TimeoutError``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.get(submission_id)
            if found["state"] in TERMINAL:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{submission_id} still {found['state']} after {timeout}s")
            time.sleep(0.2)

    def events(self, submission_id: str, last_event_id: str | None = None
               ) -> Iterator[dict[str, Any]]:
        """Transitions as they happen (server-sent events), ending with the terminal one."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self._http.stream("GET", f"/v1/submissions/{submission_id}/events",
                               headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event["id"] = line[4:]
                elif line.startswith("data: "):
                    event.update(json.loads(line[6:]))
                elif not line and event:
                    yield event
                    event = {}

    def receipt(self, submission_id: str) -> str:
        """The DSSE envelope exactly as stored (a JSON text)."""
        response = self._http.get(f"/v1/receipts/{submission_id}")
        if response.status_code >= 400:
            self._json(response)
        return response.text

    def receipts(self, since_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        page = self._json(self._http.get("/v1/receipts",
                                         params={"since_seq": since_seq, "limit": limit}))
        return list(page["receipts"])

    def keys(self) -> list[dict[str, Any]]:
        return list(self._json(self._http.get("/v1/keys")))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:500]
            retry = response.headers.get("Retry-After")
            raise ClientError(response.status_code, code, message,
                              float(retry) if retry else None)
        return response.json()
