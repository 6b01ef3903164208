"""What /openapi.json declares besides each route's own types: the one error body for every
status a route answers (with examples and the headers that come with it), and the data of
a server-sent event. Clients are generated from this document, so it says what is sent."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from controller.api import examples
from controller.api.errors import ErrorBody, message_of
from controller.api.front_door import UNKNOWN
from controller.api.schemas import SubmissionView, TransitionEvent
from controller.errors import (
    AuthError,
    ForbiddenError,
    IdempotencyConflictError,
    InputError,
    NotFoundError,
    OverloadedError,
    RateLimitedError,
    SandgateError,
    SigningError,
    UnavailableError,
)

SCHEMAS = "#/components/schemas/"
EVENT_ID = "^[0-9]{1,18}$"  # an event id: a positive SQLite integer
# What every /v1/ route may answer: the front door refuses before the route runs.
AUTHENTICATED = (401, 429, 500)
# What a route that reads a JSON body may answer besides: unparsable, slow, too large, invalid.
BODY = (400, 408, 413, 422)
TAGS = [
    {"name": "submissions", "description": "Submit code; read its state, runs, diff, output"},
    {"name": "receipts", "description": "Signed receipts, public keys, signed tree heads"},
    {"name": "workspaces", "description": "Versions and files (read only)"},
    {"name": "approvals", "description": "Submissions parked for a human, and the answers"},
    {"name": "configuration", "description": "Profiles"},
    {"name": "policies", "description": "Policy bundles"},
    {"name": "operations", "description": (
        "Liveness and readiness (unauthenticated); who the caller is; the run queue and "
        "metrics (auditors and admins)")},
]
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                               "required": True,
                               "schema": {"type": "integer", "minimum": 1}}}


def _said(exc: SandgateError) -> tuple[str, str]:
    return exc.code, message_of(exc)


# Per status: what it means here, and examples of the (code, message) it carries.
MEANING: dict[int, tuple[str, list[tuple[str, str]]]] = {
    400: ("The request body is not valid JSON",
          [("malformed_json", "the request body is not valid JSON")]),
    401: ("No API key, or a malformed, unknown or revoked one",
          [_said(AuthError(UNKNOWN))]),
    403: ("The caller's role may not do this", [_said(ForbiddenError(
        "role auditor cannot submit code"))]),
    404: ("No such record, or not the caller's (which one is never said)", [_said(
        NotFoundError(f"submission {examples.SUBMISSION_ID!r} not found"))]),
    408: ("The request body did not arrive in time", [(
        "request_timeout", "the request body stalled: no data for 10 s; send the whole body "
                           "without pausing")]),
    409: ("The Idempotency-Key was used before with a different body", [_said(
        IdempotencyConflictError("Idempotency-Key 'k-1' was used for a different submission "
                                 "body"))]),
    413: ("The request body is over the size cap",
          [("payload_too_large", "the request body is over 16777216 bytes")]),
    422: ("The request is invalid as given: the message names the field and the fix", [
        ("invalid_input", "body.code: String should have at most 1048576 characters"),
        _said(InputError("profile: unknown profile 'nope'; known: standard, strict"))]),
    429: ("Too many requests (per principal, per source, open streams or queued work): "
          "wait Retry-After seconds",
          [_said(RateLimitedError("principal 'alice' is over 10 requests/s"))]),
    500: ("An unexpected error; it was logged", [("internal", "unexpected error; it was "
                                                               "logged")]),
    503: ("Refused for now (draining, the run queue full, no signing key, the store or the "
          "engine unavailable): wait Retry-After seconds", [
        _said(OverloadedError("the run queue is full")),
        _said(UnavailableError("new work is refused because receipts cannot be signed; the "
                               "controller's log says why")),
        _said(SigningError("no active signing key"))]),
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "The scheme to authenticate with",
                               "required": True, "schema": {"type": "string",
                                                            "const": "Bearer"}}},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}


def declared(status: int) -> dict[str, Any]:
    """The declaration of ``status``: the error body, what it means, examples, headers."""
    description, said = MEANING[status]
    response: dict[str, Any] = {
        "model": ErrorBody, "description": description,
        "content": {"application/json": {"examples": {
            code: {"summary": code, "value": {"error": {"code": code, "message": message}}}
            for code, message in said}}}}
    if status in HEADERS:
        response["headers"] = {name: dict(header) for name, header in HEADERS[status].items()}
    return response


def answers(*statuses: int, public: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's error responses: ``statuses``, and what every route answers (401, 429 and
    500 behind the front door; a ``public`` route only 500)."""
    every = (500,) if public else AUTHENTICATED
    return {status: declared(status) for status in sorted({*statuses, *every})}


def event_stream(description: str) -> dict[str, Any]:
    """The ``text/event-stream`` content of a stream of ``transition`` events: each event
    (``itemSchema``, as FastAPI and OpenAPI 3.2 describe one; a ``schema`` would describe the
    whole sequence) with its ``data`` a JSON ``TransitionEvent``."""
    return {"text/event-stream": {
        "itemSchema": {
            "description": description,
            "type": "object", "required": ["id", "event", "data"],
            "properties": {
                "id": {"type": "string", "pattern": EVENT_ID, "description": (
                    "The transition's id: send it back as Last-Event-ID to resume after it")},
                "event": {"type": "string", "const": "transition"},
                "data": {"type": "string", "contentMediaType": "application/json",
                         "contentSchema": {"$ref": f"{SCHEMAS}TransitionEvent"}}}}}}


def install(app: FastAPI) -> None:
    """Serve the document the routes declare, without FastAPI's own 422 (``{"detail":
    [...]}``, which this API never sends: its 422s are declared where they happen), and with
    the schema of an event's data."""
    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            found = generate()
            _without_framework_errors(found)
            _add_schema(found, TransitionEvent.model_json_schema(
                by_alias=True, mode="serialization", ref_template=SCHEMAS + "{model}"))
            _with_examples(found, SubmissionView)
        return app.openapi_schema or {}

    app.openapi = document  # type: ignore[method-assign]


def _without_framework_errors(document: dict[str, Any]) -> None:
    framework = f"{SCHEMAS}HTTPValidationError"
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == framework:
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _with_examples(document: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put back the examples of ``models`` as written: FastAPI drops every null from the
    document (``exclude_none``), also inside examples, where a null is the value shown."""
    schemas = document.get("components", {}).get("schemas", {})
    for model in models:
        extra = model.model_config.get("json_schema_extra")
        if isinstance(extra, dict) and model.__name__ in schemas:
            schemas[model.__name__]["examples"] = extra["examples"]


def _add_schema(document: dict[str, Any], schema: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[schema["title"]] = schema
