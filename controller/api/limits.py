"""Request limits: the front door's knobs, a body-size cap (413), token buckets per principal
and per failing source, and a cap on open event streams per principal."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.errors import error_response
from controller.errors import RateLimitedError
from controller.settings import Settings


def _setting(name: str) -> Any:
    """The default of the ``Settings`` field ``name``: the one place each value is written."""
    return field(default=Settings.model_fields[name].default)


@dataclass(frozen=True)
class Limits:
    """What one client may hold or cost before it has proved who it is, and after (the
    defaults and meanings are the ``Settings`` fields of the same names)."""

    header_timeout_s: float = _setting("header_timeout_s")
    body_timeout_s: float = _setting("body_timeout_s")
    body_deadline_s: float = _setting("body_deadline_s")
    auth_failures_per_min: float = _setting("auth_failures_per_min")
    auth_cache_s: float = _setting("auth_cache_s")
    stream_idle_s: float = _setting("stream_idle_s")
    streams_per_principal: int = _setting("streams_per_principal")
    max_connections: int = _setting("max_connections")
    connections_per_source: int = _setting("connections_per_source")
    keep_alive_s: int = _setting("keep_alive_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        answered = False  # by us: whatever the app sends after that goes nowhere
        started = False

        async def counted() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answered here: the app would turn an exception into a 400.
                    if not started:
                        await self._refuse(scope, receive, send)
                    answered = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response("payload_too_large",
                                  f"the request body is over {self.limit} bytes", 413)
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per principal: ``rate`` requests a second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, principal: str) -> None:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(principal, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / self.rate
        raise RateLimitedError(f"principal {principal!r} is over {self.rate:g} requests/s",
                               retry_after=wait)


class FailureLimiter:
    """Failed authentications per source: ``per_minute`` of them, refilled at that rate.

    ``failed`` counts one, and refuses it (429) when the source has none left. It is asked
    only about keys that failed: what a source's other clients send counts for nothing
    against a valid key. Only failing sources are tracked, at most ``sources`` of them: the
    stalest is forgotten first.
    """

    def __init__(self, per_minute: float, sources: int = 10_000) -> None:
        self.burst = max(1.0, per_minute)
        self.rate = per_minute / 60
        self.sources = sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, source: str) -> None:
        """Count a failure from ``source``; ``RateLimitedError`` when it had none left."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                while len(self._buckets) >= self.sources:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[source] = _Bucket(self.burst, now)
            self._buckets.move_to_end(source)
            self._refill(bucket, now)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = (1 - bucket.tokens) / self.rate if self.rate > 0 else 60.0
        raise RateLimitedError("too many failed authentications from this address",
                               retry_after=wait)

    def tracked(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now


class OpenStreams:
    """How many event streams each principal holds open, capped per principal."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, principal: str, limit: int) -> Callable[[], None]:
        """Count one more stream for ``principal`` and return what ends it (idempotent);
        ``RateLimitedError`` when it already holds ``limit``."""
        with self._lock:
            held = self._open.get(principal, 0)
            if held >= limit:
                raise RateLimitedError(
                    f"principal {principal!r} already holds {limit} open event streams; "
                    "close one first", retry_after=5.0)
            self._open[principal] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                left = self._open.get(principal, 1) - 1
                if left > 0:
                    self._open[principal] = left
                else:
                    self._open.pop(principal, None)

        return release

    def held(self, principal: str) -> int:
        with self._lock:
            return self._open.get(principal, 0)
