"""The front door: who is calling, before any work is done for them.

- ``FrontDoorProtocol`` (the HTTP/1.1 protocol ``sandgate serve`` runs uvicorn with): a
  source holds at most ``connections_per_source`` open connections (more are closed as they
  open), and a request's head must be complete within ``header_timeout_s``, else its
  connection is closed.
- Every ``/v1/`` request is authenticated from its headers alone (``FrontDoor``), before one
  byte of its body is read: no key, or a malformed, unknown or revoked one, is a 401 that
  costs the same whatever the body. A key shaped like ours is always looked up (a sha256 and
  a SQLite read, off the event loop, at most ``LOOKUPS`` at a time, and one per key: the
  requests that bring a key while it is looked up wait for that lookup), so a valid key is
  never refused for what others sent from its address. Failures are counted per source: past
  ``auth_failures_per_min`` of them, a failing key is answered 429 instead of 401. A valid
  key is remembered for ``auth_cache_s`` seconds (by its digest), so a revocation takes
  effect within that time. The per-principal rate limit applies to every authenticated
  request.
- Then ``admit`` may refuse the request from its head and caller alone (the service refuses
  a submission the run queue has no room for, and takes its place if there is room), still
  before its body is read and without taking a thread: under a flood, a refusal does not
  queue behind the work it refuses. What ``admit`` returns is called once the request is
  answered, however that ends.
- The principal found rides along with the request (``scope["state"]["principal"]``, and
  ``vouched_for``), so the route's ``caller`` dependency does not look the key up again.
- Each chunk of a request body must arrive within ``body_timeout_s`` of the last, and the
  whole body within ``body_deadline_s`` of the app's first read, else 408.

A source is a client address, an IPv6 one by its /64 (one host usually holds all of it). It
is the TCP peer's: behind a proxy that is the proxy's, unless ``trust_proxy_headers``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import h11
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from controller.adapters.store.principals import KEY_PREFIX, digest
from controller.api.errors import error_response, render
from controller.api.limits import FailureLimiter, Limits, RateLimiter
from controller.core.models import Principal
from controller.errors import AuthError, OverloadedError, SandgateError

PROTECTED = ("/v1/", "/metrics")
LOOKUPS = 4  # key lookups in flight at once: a flood of guesses cannot take every thread
CACHED_KEYS = 1024
MAX_HEADER_BYTES = 16 * 1024  # a request head (request line and headers) larger is a 400
# What Principals.add makes: the prefix and secrets.token_urlsafe(32), 43 base64url chars.
KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")
MISSING = "missing 'Authorization: Bearer <key>'"
MALFORMED = f"not a Sandgate API key (those are {KEY_PREFIX!r} and 43 more characters)"
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


def source_of(client: object) -> str:
    """The source a client address (``scope["client"]`` or a peername) is counted under: an
    IPv4 address, or an IPv6 /64 (whose addresses a single host may take at will)."""
    host = client[0] if isinstance(client, tuple | list) and client else client
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])  # no zone: fe80::1%eth0
    except ValueError:
        return str(host)  # not an IP (a Unix socket, a test client): counted as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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
                 limiter: RateLimiter, limits: Limits,
                 admit: Callable[[Scope, Principal], Callable[[], None] | None] | None = None
                 ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.admit = admit
        self.limiter = limiter
        self.limits = limits
        self.failures = FailureLimiter(limits.auth_failures_per_min)
        self.keys = KeyCache(limits.auth_cache_s)
        self._lookups: anyio.CapacityLimiter | None = None
        self._looking_up: dict[str, asyncio.Future[Principal | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.limits)
        if not route_path(scope).startswith(PROTECTED):
            await self.app(scope, exchange.receive, exchange.send)
            return
        headers = Headers(scope=scope)
        done = None
        try:
            key, principal = await self._identify(scope, headers)
            if self.admit is not None:
                done = self.admit(scope, principal)
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
            if done is not None:
                done()

    async def _identify(self, scope: Scope, headers: Headers) -> tuple[str, Principal]:
        token = bearer_token(headers)
        if token is None:
            raise AuthError(MISSING)
        source = source_of(scope.get("client"))
        if not KEY_SHAPE.fullmatch(token):
            self.failures.failed(source)  # 429 past the source's budget, else 401
            raise AuthError(MALFORMED)
        key = digest(token)
        principal = self.keys.get(key)
        if principal is None:
            # Looked up whatever the source's record: the source may be shared (a proxy,
            # loopback, a NAT), and one client's failures must not lock the others out.
            principal = await self._look_up(key, token)
            if principal is None:
                self.failures.failed(source)
                raise AuthError(UNKNOWN)
            self.keys.put(key, principal)
        self.limiter.check(principal.name)
        return key, principal

    async def _look_up(self, key: str, token: str, *, again: bool = True
                       ) -> Principal | None:
        """The key's principal, from the one lookup of it in flight: a thousand requests
        with a key the cache has not (yet, or any more) do not take a thousand turns on the
        lookup threads. Shielded: a waiter that goes away does not cancel the others' answer.
        """
        if self._lookups is None:
            self._lookups = anyio.CapacityLimiter(LOOKUPS)
        pending = self._looking_up.get(key)
        if pending is None:
            pending = asyncio.ensure_future(anyio.to_thread.run_sync(
                self.authenticate, token, limiter=self._lookups))
            self._looking_up[key] = pending
            pending.add_done_callback(lambda done: self._looked_up(key, done))
            return await asyncio.shield(pending)
        try:
            return await asyncio.shield(pending)
        except Exception:
            if not again:
                raise
            # The lookup it waited for failed (the store busy, say): the waiters try once
            # more, together again, rather than every one failing with the first (or each
            # looking up on its own, a herd on a store in trouble).
            return await self._look_up(key, token, again=False)

    def _looked_up(self, key: str, done: asyncio.Future[Principal | None]) -> None:
        self._looking_up.pop(key, None)
        if not done.cancelled():
            done.exception()  # its failure is its waiters' to raise, not the loop's to log


def route_path(scope: Scope) -> str:
    """The path routes are matched on (without the mount point, if any)."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root):] if root and path.startswith(root) else path


def _body_pending(headers: Headers) -> bool:
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or length not in ("", "0")


class _Exchange:
    """One request's receive and send: each body chunk due within ``body_timeout_s`` of the
    last, the whole body within ``body_deadline_s`` of the first read (408 past either: a
    drip just fast enough for the first could otherwise hold the request for ever), and
    once that 408 is sent, whatever the app sends goes nowhere."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limits: Limits) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.timeout = limits.body_timeout_s
        self.whole = limits.body_deadline_s
        self.deadline: float | None = None  # set by the first read
        self.body_done = False
        self.started = False
        self.answered = False

    async def receive(self) -> Message:
        if self.body_done:
            return await self._receive()
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.whole
        wait = min(self.timeout, self.deadline - now)
        with anyio.move_on_after(wait):
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
            return message
        self.body_done = True
        if not self.started:
            why = (f"the request body stalled: no data for {self.timeout:g} s"
                   if wait >= self.timeout else
                   f"the request body was not complete within {self.whole:g} s")
            response = error_response(
                "request_timeout", f"{why}; send the whole body without pausing", 408)
            response.headers["connection"] = "close"
            await response(self.scope, self._receive, self._send)
        self.answered = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class FrontDoorProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with two limits on what a client may hold before it has
    sent a request: at most ``connections_per_source`` open connections per source (uvicorn's
    ``limit_concurrency`` counts all of them together, so one source could take every place),
    and a connection waiting for a request head (a new one, or a kept-alive one after its
    last response) is closed unless the head is complete within ``header_timeout_s``:
    trickling bytes does not extend the deadline.

    Use a subclass from ``front_door_protocol``: each has its own count of open connections.
    """

    header_timeout_s: ClassVar[float] = Limits.header_timeout_s
    connections_per_source: ClassVar[int] = Limits.connections_per_source
    open_by_source: ClassVar[dict[str, int]] = {}
    _source: str | None = None  # set while this connection is counted
    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own answer past ``limit_concurrency`` is a bare text 503 without
        # Retry-After; the same limit is kept here, answered as every other refusal is.
        self.busy_at, self.limit_concurrency = self.limit_concurrency, None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        source = source_of(transport.get_extra_info("peername"))
        held = self.open_by_source.get(source, 0)
        if held >= self.connections_per_source:
            transport.close()  # connection_lost follows, and releases nothing
            return
        self.open_by_source[source] = held + 1
        self._source = source
        self._watch_head()

    def handle_events(self) -> None:
        busy = self.busy_at is not None and (len(self.connections) >= self.busy_at
                                             or len(self.tasks) >= self.busy_at)
        if busy:  # the requests read now are answered 503 (their cycles take this app)
            app, self.app = self.app, _busy
            try:
                super().handle_events()
            finally:
                self.app = app
        else:
            super().handle_events()
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._source is not None:
            left = self.open_by_source.get(self._source, 1) - 1
            if left > 0:
                self.open_by_source[self._source] = left
            else:
                self.open_by_source.pop(self._source, None)  # only sources holding some
            self._source = None
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


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    refusal = render(OverloadedError(
        "the server holds as many connections or requests as it serves at once "
        "(max_connections)", retry_after=1.0))
    refusal.headers["connection"] = "close"  # the body is never read
    await refusal(scope, receive, send)


def front_door_protocol(limits: Limits) -> type[FrontDoorProtocol]:
    """The protocol class to give uvicorn (``http=``) for ``limits``' head deadline and
    connections per source (one server: the class holds its count of open connections)."""

    class Guarded(FrontDoorProtocol):
        header_timeout_s = limits.header_timeout_s
        connections_per_source = limits.connections_per_source
        open_by_source: ClassVar[dict[str, int]] = {}

    return Guarded
