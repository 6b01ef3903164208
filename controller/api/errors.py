"""One place mapping errors to HTTP: status, stable ``code``, a message a person can act on."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.core.records import capped
from controller.errors import (
    AuthError,
    ConfigError,
    ForbiddenError,
    IdempotencyConflictError,
    InputError,
    NotFoundError,
    RateLimitedError,
    RetryableError,
    RuntimeUnavailableError,
    SandgateError,
    SigningError,
    StoreError,
)

log = logging.getLogger("sandgate.api")

# Most specific first: the first isinstance match decides.
STATUS: list[tuple[type[SandgateError], int]] = [
    (IdempotencyConflictError, 409),
    (InputError, 422),
    (ConfigError, 422),
    (NotFoundError, 404),
    (AuthError, 401),
    (ForbiddenError, 403),
    (RateLimitedError, 429),
    (RetryableError, 503),
    (RuntimeUnavailableError, 503),
    (StoreError, 503),
    (SigningError, 503),
]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable and machine-readable: branch on this, never on the "
                                  "message", examples=["not_found"])
    message: str = Field(description="What went wrong and what to do next, for a person")


class ErrorBody(BaseModel):
    """Every error the API answers, whatever its status (the one shape /openapi.json
    declares for each 4xx and 5xx a route answers)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump()


def message_of(exc: SandgateError) -> str:
    """What a deliberate error says to the caller: what happened, then what to do."""
    return f"{str(exc).rstrip('.')}. {exc.hint}"


def error_response(code: str, message: str, status: int,
                   retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def status_of(exc: SandgateError) -> int:
    return next((s for kind, s in STATUS if isinstance(exc, kind)), 500)


def render(exc: SandgateError) -> JSONResponse:
    """The one rendering of a deliberate error, for handlers and middleware alike."""
    status = status_of(exc)
    retry = exc.retry_after if isinstance(exc, RetryableError) else None
    if status == 503 and retry is None:
        retry = 5.0
    return error_response(exc.code, message_of(exc), status, retry)


def install(app: FastAPI) -> None:
    @app.exception_handler(SandgateError)
    async def sandgate_error(request: Request, exc: SandgateError) -> JSONResponse:
        if status_of(exc) >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response("malformed_json", "the request body is not valid JSON", 400)
        # A location can be a caller's dict key (a label) of any size: each part is cut, so
        # a refusal never echoes a megabyte back.
        problems = "; ".join(
            f"{'.'.join(capped(str(p), 64) for p in err.get('loc', ()))}: "
            f"{capped(str(err.get('msg')), 300)}" for err in errors[:5])
        return error_response("invalid_input", problems, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        response = error_response(codes.get(exc.status_code, "http_error"), str(exc.detail),
                                  exc.status_code)
        response.headers.update(exc.headers or {})  # a 405's Allow (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response("internal", "unexpected error; it was logged", 500)
