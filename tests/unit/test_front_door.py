"""The front door in process (no Docker): identity before any body byte, failed keys limited
per source, body and head deadlines, bounded event streams, a readiness that leaks nothing,
and policy reloads that race without a 500."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import Message

from controller.adapters.policy.bundle import bundle_digest, load_bundle
from controller.adapters.policy.cedar import CedarEngine
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.fake import FakeRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.principals import Principals, Quota
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.front_door import KEY_SHAPE, front_door_protocol, source_of
from controller.api.limits import FailureLimiter, Limits, RateLimiter
from controller.core.models import Principal, Role
from controller.errors import RateLimitedError, RuntimeUnavailableError
from controller.service.dispatcher import Dispatcher
from controller.settings import Settings
from tests.conftest import ROOT, make_controller, python

TERMINAL_PATH = ["received", "dry_run", "assessing", "running", "validating", "committing",
                 "committed"]


class CountingPrincipals(Principals):
    """Principals that count key lookups."""

    lookups = 0

    def authenticate(self, key: str) -> Principal | None:
        self.lookups += 1
        return super().authenticate(key)


@dataclass
class Site:
    app: FastAPI
    ctx: ApiContext
    principals: CountingPrincipals
    keys: dict[str, str]


def site(tmp_path: Path, *, rate: float = 1000, max_body: int = 16 << 20,
         **limits: Any) -> Site:
    controller = make_controller(tmp_path, FakeRuntime())
    settings = Settings(data_dir=tmp_path, max_body_bytes=max_body)
    principals = CountingPrincipals(settings.db_path)
    keys = {name: principals.add(name, role) for name, role in
            (("alice", Role.AGENT), ("bob", Role.AGENT), ("root", Role.ADMIN))}
    ctx = ApiContext(controller=controller, dispatcher=Dispatcher(controller, workers=1),
                     principals=principals, keyring=KeyRing(settings.keys_dir),
                     settings=settings, limiter=RateLimiter(rate, int(max(rate, 1))))
    ctx.limits = Limits(**limits)
    return Site(create_app(ctx), ctx, principals, keys)


@dataclass
class Call:
    """One request driven straight through ASGI, with full control of when body bytes come
    and when the client goes away."""

    app: FastAPI
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=lambda: [b""])
    stall: bool = False  # after the chunks, the body neither ends nor goes on
    client: str = "10.0.0.1"
    reads: int = 0
    sent: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gone = asyncio.Event()
        self.started = asyncio.Event()

    async def receive(self) -> Message:
        self.reads += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk,
                    "more_body": bool(self.chunks) or self.stall}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.start":
            self.started.set()

    async def run(self) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": self.method, "scheme": "http",
                 "path": self.path, "raw_path": self.path.encode(), "query_string": b"",
                 "root_path": "", "client": (self.client, 40000), "server": ("sandgate", 80),
                 "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                             for k, v in self.headers.items()], "state": {}}
        await self.app(scope, self.receive, self.send)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def header(self) -> dict[str, str]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] ==
                        "http.response.body")

    @property
    def complete(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body", False)
                   for m in self.sent)

    def error(self) -> dict[str, str]:
        return dict(json.loads(self.body)["error"])


def call(app: FastAPI, method: str, path: str, token: str | None = None,
         timeout: float = 5, **kwargs: Any) -> Call:
    """One whole request; fails if the app has not answered within ``timeout`` s."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    exchange = Call(app, method, path, headers={**headers, **kwargs.pop("headers", {})},
                    **kwargs)

    async def run() -> None:
        await asyncio.wait_for(exchange.run(), timeout)

    asyncio.run(run())
    return exchange


BIG = {"content-type": "application/json", "content-length": str(15 << 20)}


def guess(n: int) -> str:
    """A key shaped like ours that nobody holds."""
    return f"sg_{n:043d}"


@pytest.mark.parametrize(("token", "message", "lookups"), [
    (None, "missing 'Authorization: Bearer <key>'", 0),
    ("sg_not-a-key", "not a Sandgate API key", 0),
    (guess(1), "unknown or revoked", 1)])
def test_a_caller_without_a_valid_key_costs_no_body_read(tmp_path: Path, token: str | None,
                                                          message: str, lookups: int) -> None:
    s = site(tmp_path)
    answer = call(s.app, "POST", "/v1/submissions", token, headers=BIG,
                  chunks=[b"{" * 65536] * 4)
    assert answer.status == 401 and answer.reads == 0
    assert answer.error()["code"] == "unauthenticated"
    assert answer.header["www-authenticate"] == "Bearer"
    assert answer.header["connection"] == "close"  # the body will never be read
    assert s.principals.lookups == lookups
    assert answer.error()["message"].startswith(message)


def test_the_key_shape_is_what_principals_make(tmp_path: Path) -> None:
    s = site(tmp_path)
    assert all(KEY_SHAPE.fullmatch(key) for key in s.keys.values())
    assert KEY_SHAPE.fullmatch(guess(7))
    assert not any(KEY_SHAPE.fullmatch(k) for k in ("sg_x", guess(7) + "a", "xx" + guess(7)[2:]))


def test_failing_keys_from_one_source_do_not_lock_out_a_valid_one(tmp_path: Path) -> None:
    s = site(tmp_path, auth_failures_per_min=10)
    answers = [call(s.app, "GET", "/v1/keys", guess(n), client="10.6.6.6") for n in range(20)]
    assert [a.status for a in answers] == [401] * 10 + [429] * 10
    assert answers[-1].error()["code"] == "rate_limited"
    assert int(answers[-1].header["retry-after"]) >= 1
    assert s.principals.lookups == 20  # every key shaped like ours is looked up
    # Valid keys from there are answered, uncached and cached, for reads and submissions.
    assert call(s.app, "GET", "/v1/keys", s.keys["alice"], client="10.6.6.6").status == 200
    assert call(s.app, "GET", "/v1/keys", s.keys["alice"], client="10.6.6.6").status == 200
    submitted = call(s.app, "POST", "/v1/submissions", s.keys["bob"], client="10.6.6.6",
                     headers={"content-type": "application/json"},
                     chunks=[b'{"language": "python", "code": "print(1)"}'])
    assert submitted.status in (200, 202), submitted.body[:300]
    # Failing keys from there are still refused, a malformed one without a lookup; a
    # missing key is a plain 401; another source has its own budget.
    assert call(s.app, "GET", "/v1/keys", guess(99), client="10.6.6.6").status == 429
    lookups = s.principals.lookups
    assert call(s.app, "GET", "/v1/keys", "sg_short", client="10.6.6.6").status == 429
    assert s.principals.lookups == lookups
    assert call(s.app, "GET", "/v1/keys", client="10.6.6.6").status == 401
    assert call(s.app, "GET", "/v1/keys", guess(98), client="10.7.7.7").status == 401


def test_valid_keys_arriving_together_cost_a_source_nothing(tmp_path: Path) -> None:
    s = site(tmp_path, auth_failures_per_min=10)
    for n in range(9):  # one failure left
        assert call(s.app, "GET", "/v1/keys", guess(n), client="10.7.7.7").status == 401
    calls = [Call(s.app, "GET", "/v1/keys", client="10.7.7.7",
                  headers={"authorization": f"Bearer {key}"})
             for key in [s.keys["bob"], s.keys["root"]] * 10]

    async def together() -> None:
        await asyncio.wait_for(asyncio.gather(*(c.run() for c in calls)), 10)

    asyncio.run(together())
    assert [c.status for c in calls] == [200] * 20
    assert call(s.app, "GET", "/v1/keys", guess(50), client="10.7.7.7").status == 401
    assert call(s.app, "GET", "/v1/keys", guess(51), client="10.7.7.7").status == 429


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s(tmp_path: Path) -> None:
    assert source_of(("10.1.2.3", 5000)) == "10.1.2.3" != source_of(("10.1.2.4", 5000))
    assert source_of(("::ffff:10.1.2.3", 5000, 0, 0)) == "10.1.2.3"
    one = source_of(("2001:db8:1:2::1", 5000, 0, 0))
    assert one == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:2:ffff:ab:cd:ef", 1)) == one
    assert source_of(("2001:db8:1:3::1", 1)) != one
    assert source_of(("fe80::1%eth0", 1)) == "fe80::/64"
    assert source_of(None) == "unknown" and source_of(("testclient", 1)) == "testclient"
    # A host walking through its /64 shares one failure budget.
    s = site(tmp_path, auth_failures_per_min=3)
    statuses = [call(s.app, "GET", "/v1/keys", guess(n), client=f"2001:db8:1:2::{n:x}").status
                for n in range(1, 6)]
    assert statuses == [401] * 3 + [429] * 2
    assert call(s.app, "GET", "/v1/keys", guess(9), client="2001:db8:1:3::1").status == 401


def test_the_failure_table_is_bounded_and_holds_failing_sources_only() -> None:
    limiter = FailureLimiter(per_minute=2, sources=3)
    for source in ("a", "b", "c", "d"):
        limiter.failed(source)
    assert limiter.tracked() == 3  # "a", the stalest, was forgotten
    limiter.failed("d")
    with pytest.raises(RateLimitedError) as caught:
        limiter.failed("d")
    assert 1 < caught.value.retry_after <= 30
    assert limiter.tracked() == 3
    limiter.failed("a")  # forgotten: a full budget again
    limiter.failed("a")


def test_one_lookup_per_key_and_revocation_within_the_cache_time(tmp_path: Path) -> None:
    s = site(tmp_path, rate=3, auth_cache_s=0.5)
    statuses = [call(s.app, "GET", "/v1/keys", s.keys["alice"]).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # the per-principal rate limit still applies
    assert s.principals.lookups == 1  # neither the route's caller nor later requests
    assert call(s.app, "GET", "/v1/keys", s.keys["bob"]).status == 200
    s.principals.revoke("alice")
    time.sleep(0.6)
    assert call(s.app, "GET", "/v1/keys", s.keys["alice"]).status == 401


def test_requests_arriving_together_with_one_key_share_its_lookup(tmp_path: Path) -> None:
    """A flood with a key the cache does not hold (a cold cache, or an expired entry) costs
    one lookup per key, not one per request; an unknown key's flood too, each request still
    counted a failure of its source."""
    s = site(tmp_path, auth_failures_per_min=20)
    known = [Call(s.app, "GET", "/v1/keys", client=f"10.8.0.{n % 4}",
                  headers={"authorization": f"Bearer {key}"})
             for n, key in enumerate([s.keys["alice"], s.keys["bob"]] * 25)]
    unknown = [Call(s.app, "GET", "/v1/keys", client="10.8.1.1",
                    headers={"authorization": f"Bearer {guess(7)}"}) for _ in range(25)]

    async def together() -> None:
        await asyncio.wait_for(asyncio.gather(*(c.run() for c in known + unknown)), 10)

    asyncio.run(together())
    assert [c.status for c in known] == [200] * 50
    assert s.principals.lookups == 3
    assert sorted(c.status for c in unknown) == [401] * 20 + [429] * 5


def test_a_failed_shared_lookup_fails_only_the_request_that_made_it(tmp_path: Path) -> None:
    """The requests that waited for a lookup that failed try once more, together: a store
    busy once fails one request, not every one that brought the key, nor is looked up once
    per request."""
    s = site(tmp_path)
    real = s.principals.authenticate
    calls: list[str] = []

    def busy_once(key: str) -> Principal | None:
        calls.append(key)
        if len(calls) == 1:
            time.sleep(0.1)  # the others arrive while it is in flight
            raise sqlite3.OperationalError("database is locked")
        return real(key)

    s.principals.authenticate = busy_once  # type: ignore[method-assign]
    requests = [Call(s.app, "GET", "/v1/keys", headers={
        "authorization": f"Bearer {s.keys['alice']}"}) for _ in range(10)]

    async def together() -> list[object]:
        return list(await asyncio.wait_for(asyncio.gather(
            *(c.run() for c in requests), return_exceptions=True), 10))

    outcomes = asyncio.run(together())
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], sqlite3.OperationalError)
    assert sorted(c.status for c in requests) == [200] * 9 + [500]
    assert len(calls) == 2  # the one that failed, and one more for the nine after it


def test_a_burst_of_submissions_is_judged_by_its_heads(tmp_path: Path) -> None:
    """Each POST takes its place in the run queue from its head: the ones past its share are
    refused before a byte of their bodies is read, however many arrive before any body;
    bodies that never come hold no place kept for another principal; a place whose request
    goes away unanswered is given back."""
    s = site(tmp_path)
    s.ctx.dispatcher = Dispatcher(s.ctx.controller, workers=1, queue_size=6)  # max_queued 3
    posts = [Call(s.app, "POST", "/v1/submissions", chunks=[],
                  headers={"authorization": f"Bearer {s.keys['alice']}",
                           "content-type": "application/json", "content-length": "100"})
             for _ in range(8)]
    body = json.dumps({"language": "python", "code": "print(1)"}).encode()

    async def burst() -> None:
        runs = [asyncio.ensure_future(post.run()) for post in posts]
        await asyncio.sleep(0.3)
        answered = [post for post in posts if post.complete]
        assert len(answered) == 5, [post.sent for post in posts]
        for post in answered:
            assert post.status == 429 and post.reads == 0
            assert "max_queued" in post.error()["message"]
        assert s.ctx.dispatcher._held == 3  # the three whose bodies are awaited
        bob = Call(s.app, "POST", "/v1/submissions", chunks=[body],
                   headers={"authorization": f"Bearer {s.keys['bob']}",
                            "content-type": "application/json"})
        await asyncio.wait_for(bob.run(), 5)
        assert bob.status == 202, bob.body
        for post in posts:
            post.gone.set()
        await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 5)

    asyncio.run(burst())
    assert s.ctx.dispatcher._held == 1  # bob's submission; alice's places all given back
    accepted = call(s.app, "POST", "/v1/submissions", s.keys["alice"],
                    headers={"content-type": "application/json"}, chunks=[body])
    assert accepted.status == 202, accepted.body
    assert s.ctx.dispatcher._held == 2  # the hold became the submission's place, once


def test_heads_alone_are_held_to_the_principals_own_quota(tmp_path: Path) -> None:
    """A principal whose bodies never come, and who has not submitted lately, is held to
    the quota an admin gave it (read with its key), not to the default."""
    s = site(tmp_path)
    s.principals.set_quota("alice", Quota(max_running=None, max_queued=1))
    s.ctx.dispatcher = Dispatcher(s.ctx.controller, workers=1, queue_size=6)  # default 3
    posts = [Call(s.app, "POST", "/v1/submissions", chunks=[],
                  headers={"authorization": f"Bearer {s.keys['alice']}",
                           "content-type": "application/json", "content-length": "100"})
             for _ in range(4)]

    async def burst() -> None:
        runs = [asyncio.ensure_future(post.run()) for post in posts]
        await asyncio.sleep(0.3)
        assert sum(post.complete for post in posts) == 3
        assert s.ctx.dispatcher._held == 1
        for post in posts:
            post.gone.set()
        await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 5)

    asyncio.run(burst())
    assert s.ctx.dispatcher._held == 0


def test_a_stalled_body_is_answered_408(tmp_path: Path) -> None:
    s = site(tmp_path, body_timeout_s=0.3)
    started = time.monotonic()
    answer = call(s.app, "POST", "/v1/submissions", s.keys["alice"],
                  headers={"content-type": "application/json", "content-length": "100"},
                  chunks=[b'{"language": '], stall=True)
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert answer.header["connection"] == "close"
    assert time.monotonic() - started < 3
    assert [m["type"] for m in answer.sent] == ["http.response.start", "http.response.body"]


def test_a_body_dripped_just_fast_enough_is_cut_off_at_the_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = site(tmp_path, body_timeout_s=0.3, body_deadline_s=1.0)
    exchange = Call(s.app, "POST", "/v1/submissions",
                    headers={"authorization": f"Bearer {s.keys['alice']}",
                             "content-type": "application/json", "content-length": "1000"})
    chunks = iter([b'{"language": '] + [b" "] * 100)

    async def drip() -> Message:  # a byte every 0.1 s: never late for the chunk timeout
        exchange.reads += 1
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    monkeypatch.setattr(exchange, "receive", drip)
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(exchange.run(), 5))
    assert 0.9 < time.monotonic() - started < 2
    assert exchange.status == 408 and exchange.error()["code"] == "request_timeout"
    assert "not complete within 1 s" in exchange.error()["message"]
    assert exchange.header["connection"] == "close"
    assert 5 < exchange.reads < 15
    assert [m["type"] for m in exchange.sent] == ["http.response.start", "http.response.body"]


def test_a_streamed_body_over_the_cap_is_413(tmp_path: Path) -> None:
    s = site(tmp_path, max_body=4096)
    answer = call(s.app, "POST", "/v1/submissions", s.keys["alice"],
                  headers={"content-type": "application/json",
                           "transfer-encoding": "chunked"}, chunks=[b" " * 3000] * 3)
    assert answer.status == 413 and answer.error()["code"] == "payload_too_large"
    assert len([m for m in answer.sent if m["type"] == "http.response.start"]) == 1


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDGATE_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SANDGATE_STREAMS_PER_PRINCIPAL", "3")
    monkeypatch.setenv("SANDGATE_CONNECTIONS_PER_SOURCE", "7")
    limits = Limits.from_settings(Settings())
    assert (limits.header_timeout_s, limits.streams_per_principal) == (2.5, 3)
    assert limits.connections_per_source == 7
    assert limits.stream_idle_s == Limits().stream_idle_s == Settings().stream_idle_s
    assert limits.body_deadline_s == Limits().body_deadline_s == Settings().body_deadline_s
    assert not Settings().trust_proxy_headers  # X-Forwarded-For is believed only if asked


# Event streams ---------------------------------------------------------------------------

def events_of(body: bytes) -> list[dict[str, Any]]:
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines()
                     if not line.startswith(":"))
        if "data" in lines:
            found.append({"id": lines["id"], **json.loads(lines["data"])})
    return found


def test_a_stream_ends_after_the_terminal_event_and_at_once_past_it(tmp_path: Path) -> None:
    s = site(tmp_path)
    done = s.ctx.controller.submit(python("print(1)", agent="alice"))
    path = f"/v1/submissions/{done.id}/events"
    answer = call(s.app, "GET", path, s.keys["alice"])
    events = events_of(answer.body)
    assert answer.status == 200 and [e["to"] for e in events] == TERMINAL_PATH
    assert answer.header["content-type"].startswith("text/event-stream")
    resumed = call(s.app, "GET", path, s.keys["alice"],
                   headers={"last-event-id": events[3]["id"]})
    assert [e["to"] for e in events_of(resumed.body)] == TERMINAL_PATH[4:]
    past = call(s.app, "GET", path, s.keys["alice"], timeout=3,
                headers={"last-event-id": str(int(events[-1]["id"]) + 1000)})
    assert past.status == 200 and past.complete and events_of(past.body) == []
    assert s.ctx.streams.held("alice") == 0


@pytest.mark.parametrize("value", ["9" * 5000, "abc", "-1", "1.5", "\u00b2", "9" * 19, ""])
def test_a_bad_last_event_id_is_a_4xx_never_a_500(tmp_path: Path, value: str) -> None:
    s = site(tmp_path)
    done = s.ctx.controller.submit(python("print(1)", agent="alice"))
    answer = call(s.app, "GET", f"/v1/submissions/{done.id}/events", s.keys["alice"],
                  headers={"last-event-id": value})
    assert answer.status == 422 and answer.error()["code"] == "invalid_input"
    assert "Last-Event-ID" in answer.error()["message"]


def test_an_idle_stream_is_closed(tmp_path: Path) -> None:
    s = site(tmp_path, stream_idle_s=0.4)
    waiting = s.ctx.controller.accept(python("print(1)", agent="alice"))  # never processed
    started = time.monotonic()
    answer = call(s.app, "GET", f"/v1/submissions/{waiting.id}/events", s.keys["alice"],
                  timeout=4)
    assert answer.complete and [e["to"] for e in events_of(answer.body)] == ["received"]
    assert 0.3 < time.monotonic() - started < 3
    assert s.ctx.streams.held("alice") == 0


def test_streams_are_capped_per_principal_and_released_on_disconnect(tmp_path: Path) -> None:
    s = site(tmp_path, streams_per_principal=3)
    waiting = s.ctx.controller.accept(python("print(1)", agent="alice"))
    mine = s.ctx.controller.accept(python("print(1)", agent="bob"))

    def stream(who: str, sid: str) -> Call:
        return Call(s.app, "GET", f"/v1/submissions/{sid}/events",
                    headers={"authorization": f"Bearer {s.keys[who]}"})

    async def scenario() -> None:
        held = [stream("alice", waiting.id) for _ in range(3)]
        tasks = [asyncio.create_task(c.run()) for c in held]
        await asyncio.wait_for(asyncio.gather(*(c.started.wait() for c in held)), 3)
        assert [c.status for c in held] == [200] * 3 and s.ctx.streams.held("alice") == 3
        refused = stream("alice", waiting.id)
        await asyncio.wait_for(refused.run(), 3)
        assert refused.status == 429 and refused.error()["code"] == "rate_limited"
        assert int(refused.header["retry-after"]) >= 1
        other = stream("bob", mine.id)  # another tenant is not affected
        other_task = asyncio.create_task(other.run())
        await asyncio.wait_for(other.started.wait(), 3)
        assert other.status == 200
        held[0].gone.set()  # the client goes away
        await asyncio.wait_for(tasks[0], 3)
        assert s.ctx.streams.held("alice") == 2
        again = stream("alice", waiting.id)
        again_task = asyncio.create_task(again.run())
        await asyncio.wait_for(again.started.wait(), 3)
        assert again.status == 200
        for c in [*held[1:], again, other]:
            c.gone.set()
        await asyncio.wait_for(asyncio.gather(*tasks[1:], again_task, other_task), 3)

    asyncio.run(scenario())
    assert s.ctx.streams.held("alice") == 0 and s.ctx.streams.held("bob") == 0


def test_another_tenants_submission_is_not_found_without_loading_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = site(tmp_path)
    theirs = s.ctx.controller.submit(python("print(1)", agent="alice"))
    store = s.ctx.controller.store
    loads: list[str] = []
    original = store.get

    def counted(submission_id: str) -> Any:
        loads.append(submission_id)
        return original(submission_id)

    monkeypatch.setattr(store, "get", counted)
    for path in (f"/v1/submissions/{theirs.id}", f"/v1/submissions/{theirs.id}/events"):
        answer = call(s.app, "GET", path, s.keys["bob"])
        assert answer.status == 404 and answer.error()["code"] == "not_found", path
    assert loads == []
    alice = next(p for p in s.ctx.principals.list() if p.name == "alice")
    assert s.ctx.check_owner(theirs.id, alice) == "committed"
    assert call(s.app, "GET", f"/v1/submissions/{theirs.id}", s.keys["alice"]).status == 200


# Readiness -------------------------------------------------------------------------------

def test_readyz_names_the_failing_check_without_its_internals(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = site(tmp_path)
    secret = "/var/lib/secret-host-path/docker.sock"

    def down() -> None:
        raise RuntimeUnavailableError(f"cannot connect to {secret}")

    def no_writes() -> None:
        raise AssertionError("readiness must not take a write transaction")

    monkeypatch.setattr(s.ctx.controller.runtime, "ping", down)
    monkeypatch.setattr(s.ctx.controller.store, "check_writable", no_writes)
    answer = call(s.app, "GET", "/readyz")
    assert answer.status == 503 and secret.encode() not in answer.body
    checks = json.loads(answer.body)["checks"]
    assert checks["docker"] == "the container engine does not answer"
    assert checks["store"] == "ok" and checks["policy_bundle"] == "ok"
    assert call(s.app, "GET", "/healthz").status == 200


# Policy reloads --------------------------------------------------------------------------

def test_twenty_concurrent_reloads_all_succeed(tmp_path: Path) -> None:
    engine = ShadowedEngine(CedarEngine.from_path(ROOT / "policies" / "default"),
                            CedarEngine.from_path(ROOT / "policies" / "default"))
    archive = tmp_path / "bundles"
    gate = threading.Barrier(20)
    failures: list[BaseException] = []

    def reload() -> None:
        gate.wait()
        try:
            engine.reload(archive)
        except BaseException as exc:  # recorded, then asserted on
            failures.append(exc)

    threads = [threading.Thread(target=reload) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    digest = bundle_digest(ROOT / "policies" / "default")
    assert [p.name for p in archive.iterdir()] == [digest.removeprefix("sha256:")]
    assert bundle_digest(archive / digest.removeprefix("sha256:")) == digest


ARCHIVER = """
import sys, time
from pathlib import Path
from controller.adapters.policy.bundle import archive_bundle, load_bundle
bundle = load_bundle(Path(sys.argv[1]))
while time.time() < float(sys.argv[3]):
    pass
for round in range(40):
    archive_bundle(bundle, Path(sys.argv[2]) / str(round))
"""


def test_processes_archiving_one_bundle_at_once_all_succeed(tmp_path: Path) -> None:
    source = ROOT / "policies" / "default"
    start = str(time.time() + 4)
    runs = [subprocess.Popen([sys.executable, "-c", ARCHIVER, str(source), str(tmp_path),
                              start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(6)]
    results = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-500:] for _, err in results]
    digest = load_bundle(source).digest.removeprefix("sha256:")
    for round in range(40):
        assert [p.name for p in (tmp_path / str(round)).iterdir()] == [digest]


# The head deadline and connections per source, on a real uvicorn on loopback ------------

async def tiny(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def serving(limits: Limits) -> Iterator[int]:
    """``tiny`` on a loopback port, behind the front door's protocol for ``limits``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(tiny, host="127.0.0.1", port=port, log_level="warning",
                            http=front_door_protocol(limits), timeout_keep_alive=30,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def deadline_server() -> Iterator[int]:
    with serving(Limits(header_timeout_s=0.5)) as port:
        yield port


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closed ``sock`` (reading whatever it sent meanwhile)."""
    started = time.monotonic()
    sock.settimeout(limit)
    while sock.recv(4096):
        pass
    return time.monotonic() - started


def test_a_head_trickled_forever_is_cut_off(deadline_server: int) -> None:
    idle = socket.create_connection(("127.0.0.1", deadline_server))
    trickler = socket.create_connection(("127.0.0.1", deadline_server))
    started = time.monotonic()
    for part in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"X-a: 1\r\n", b"X-b: 2\r\n"):
        trickler.sendall(part)
        time.sleep(0.15)
    assert closed_after(trickler, 3) + (time.monotonic() - started) < 2.5
    assert closed_after(idle, 3) < 2.5
    with socket.create_connection(("127.0.0.1", deadline_server)) as prompt:
        prompt.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        prompt.settimeout(3)
        assert prompt.recv(4096).startswith(b"HTTP/1.1 200")
        prompt.sendall(b"GET / HTTP/1.1\r\n")  # the next head on a kept-alive connection
        assert closed_after(prompt, 3) < 2.5
    idle.close()
    trickler.close()


def answered(port: int) -> bytes:
    """What a whole request on a new connection gets (nothing: closed unanswered)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(3)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(4096)
        except ConnectionError:
            return b""


def test_connections_are_capped_per_source() -> None:
    cap = 4
    with serving(Limits(header_timeout_s=30, connections_per_source=cap)) as port:
        sockets = []
        for _ in range(cap + 5):  # one at a time: the first ones are those accepted
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head never finished
            sockets.append(sock)
        try:
            for sock in sockets[cap:]:  # closed at once, head deadline or not
                with suppress(ConnectionResetError):  # a reset is a close too
                    assert closed_after(sock, 2) < 1.5
            for sock in sockets[:cap]:  # still held open
                sock.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    sock.recv(1)
            assert answered(port) == b""  # even a prompt request needs a place
        finally:
            for sock in sockets:
                sock.close()
        deadline = time.monotonic() + 3  # the places are given back as the server sees EOF
        while True:
            reply = answered(port)
            if reply.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.1 200")
