"""The front door: who is calling, before any work is done for them.

- A request's head must be complete within ``header_timeout_s`` (``HeaderDeadlineProtocol``,
  the HTTP/1.1 protocol ``sandgate serve`` runs uvicorn with), else its connection is closed.
- Every ``/v1/`` request is authenticated from its headers alone (``FrontDoor``), before one
  byte of its body is read: no key, or an unknown or revoked one, is a 401 that costs the
  same whatever the body. Key lookups (a sha256 and a SQLite read) run off the event loop, at
  most ``LOOKUPS`` at a time, and are counted per source address: past
  ``auth_failures_per_min`` failures a source is answered 429 without a lookup. A valid key
  is remembered for ``auth_cache_s`` seconds (by its digest), so a revocation takes effect
  within that time. The per-principal rate limit applies to every authenticated request.
- The principal found rides along with the request (``scope["state"]["principal"]``, and
  ``vouched_for``), so the route's ``caller`` dependency does not look the key up again.
- Each chunk of a request body must arrive within ``body_timeout_s`` of the last, else 408.

Sources are ``scope["client"]`` addresses: behind a proxy they are the proxy's.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import ClassVar

import anyio
import anyio.to_thread
import h11
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from controller.api.errors import error_response, render
from controller.api.limits import FailureLimiter, Limits, RateLimiter
from controller.errors import AuthError, SandgateError
from controller.models import Principal
from controller.principals import digest

PROTECTED = "/v1/"
LOOKUPS = 4  # key lookups in flight at once: a flood of guesses cannot take every thread
CACHED_KEYS = 1024
MAX_HEADER_BYTES = 16 * 1024  # a request head (request line and headers) larger is a 400
MISSING = "missing 'Authorization: Bearer <key>'"
UNKNOWN = "unknown or revoked API key"

_vouched: ContextVar[tuple[str, Principal] | None] = ContextVar("sandgate_vouched",
                                                                 default=None)


def vouched_for(token: str | None) -> Principal | None:
    """The principal the front door authenticated ``token`` as, for this request, or None."""
    found = _vouched.get()
    if found is None or not token:
        return None
    key, principal = found
    return principal if hmac.compare_digest(key, digest(token)) else None


def bearer_token(headers: Headers) -> str | None:
    """The key of an ``Authorization: Bearer`` header, parsed as FastAPI's ``HTTPBearer``."""
    authorization = headers.get("authorization")
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


class KeyCache:
    """Valid keys by digest, each trusted for ``ttl`` seconds; at most ``size`` of them."""

    def __init__(self, ttl: float, size: int = CACHED_KEYS) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.size:
            self._entries.popitem(last=False)
        self._entries[key] = (time.monotonic() + self.ttl, principal)


class FrontDoor:
    """ASGI middleware: authenticate ``/v1/`` requests from their headers, then time the
    body's arrival. Must sit outside anything that reads a body."""

    def __init__(self, app: ASGIApp, authenticate: Callable[[str], Principal | None],
                 limiter: RateLimiter, limits: Limits) -> None:
        self.app = app
        self.authenticate = authenticate
        self.limiter = limiter
        self.limits = limits
        self.failures = FailureLimiter(limits.auth_failures_per_min)
        self.keys = KeyCache(limits.auth_cache_s)
        self._lookups: anyio.CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.limits.body_timeout_s)
        if not _route_path(scope).startswith(PROTECTED):
            await self.app(scope, exchange.receive, exchange.send)
            return
        headers = Headers(scope=scope)
        try:
            key, principal = await self._identify(scope, headers)
        except SandgateError as exc:
            refusal = render(exc)
            if _body_pending(headers):
                refusal.headers["connection"] = "close"  # the body is never read
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        reset = _vouched.set((key, principal))
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            _vouched.reset(reset)

    async def _identify(self, scope: Scope, headers: Headers) -> tuple[str, Principal]:
        token = bearer_token(headers)
        if token is None:
            raise AuthError(MISSING)
        key = digest(token)
        principal = self.keys.get(key)
        if principal is None:
            client = scope.get("client")
            source = str(client[0]) if client else "unknown"
            self.failures.check(source)
            if self._lookups is None:
                self._lookups = anyio.CapacityLimiter(LOOKUPS)
            principal = await anyio.to_thread.run_sync(self.authenticate, token,
                                                       limiter=self._lookups)
            if principal is None:
                self.failures.failed(source)
                raise AuthError(UNKNOWN)
            self.keys.put(key, principal)
        self.limiter.check(principal.name)
        return key, principal


def _route_path(scope: Scope) -> str:
    """The path routes are matched on (without the mount point, if any)."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path


def _body_pending(headers: Headers) -> bool:
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or length not in ("", "0")


class _Exchange:
    """One request's receive and send: each body chunk due within ``timeout`` seconds (408
    past it), and once that 408 is sent, whatever the app sends goes nowhere."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, timeout: float) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.timeout = timeout
        self.body_done = False
        self.started = False
        self.answered = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        with anyio.move_on_after(self.timeout):
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
            return message
        self.body_done = True
        if not self.started:
            response = error_response(
                "request_timeout", f"the request body stalled: no data for {self.timeout:g} "
                "s; send the whole body without pausing", 408)
            response.headers["connection"] = "close"
            await response(self.scope, self._receive, self._send)
        self.answered = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, but a connection waiting for a request head (a new one,
    or a kept-alive one after its last response) is closed unless the head is complete
    within ``header_timeout_s``: trickling bytes does not extend the deadline."""

    header_timeout_s: ClassVar[float] = Limits.header_timeout_s
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Armed while the peer owes a request head (h11: their state IDLE), else off."""
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def header_deadline(timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``) for a head deadline of ``timeout_s``."""

    class Deadline(HeaderDeadlineProtocol):
        header_timeout_s = timeout_s

    return Deadline
