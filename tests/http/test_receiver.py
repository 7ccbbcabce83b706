"""webhook_receiver over a real socket: replay cache, tolerance, rotation, size limit.

Includes the regression for issue 13, defect 6: a message replayed 60 s later (past
the dedup cache's default 30 s webhook TTL, inside the 300 s tolerance) must not
reach the handler a second time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from fokha_integration.clock import ManualClock
from fokha_integration.errors import ConfigError
from fokha_integration.http import (
    WebhookEvent,
    WebhookReceiverConfig,
    generate_webhook_secret,
    webhook_headers,
    webhook_receiver,
)
from tests.support import free_port, timeout

OLD, NEW, STRANGER = (generate_webhook_secret() for _ in range(3))


@dataclass
class Site:
    """A running receiver: its URL, clock, and what the handler saw."""

    url: str
    clock: ManualClock
    handled: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    fail_next: bool = False
    answer_503_next: bool = False


Serve = Callable[..., Awaitable[Site]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start receivers on free ports (``serve(config=..., blocking=False)``)."""
    runners: list[web.AppRunner] = []

    async def start(config: WebhookReceiverConfig | None = None, blocking: bool = False) -> Site:
        clock = ManualClock()
        port = free_port()
        site = Site(f"http://127.0.0.1:{port}/hook", clock)
        if not blocking:
            site.gate.set()

        async def handler(request: web.Request, event: WebhookEvent) -> web.Response | None:
            site.entered.set()
            await site.gate.wait()
            if site.fail_next:
                site.fail_next = False
                raise RuntimeError("handler failed")
            if site.answer_503_next:
                site.answer_503_next = False
                return web.Response(status=503)
            site.handled.append(event.id)
            return None

        receiver = webhook_receiver(handler, secret=[OLD, NEW], config=config, clock=clock)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return site

    yield start
    for runner in runners:
        await runner.cleanup()


async def _post(
    url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout(10))
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_replay_60s_later_does_not_reach_the_handler(serve: Serve) -> None:
    """Defect 6: the same signed message replayed at +60 s is acked, the handler ran once."""
    site = await serve()
    body = b'{"signal":"buy"}'
    headers = webhook_headers("msg-60", body, NEW, timestamp=int(site.clock.time()))
    status, _, _ = await _post(site.url, body, headers)
    assert status == 200
    site.clock.advance(60)
    status, _, payload = await _post(site.url, body, headers)
    assert status == 200 and b"already_processed" in payload
    assert site.handled == ["msg-60"]


async def test_every_replay_within_the_ttl_is_refused(serve: Serve) -> None:
    """50 messages replayed at random moments up to the TTL: the handler ran once per id."""
    site = await serve(WebhookReceiverConfig(tolerance=300, on_replay="conflict"))
    rng = random.Random(7)
    sent = []
    for i in range(50):
        body = f'{{"n":{i}}}'.encode()
        headers = webhook_headers(f"m{i}", body, OLD, timestamp=int(site.clock.time()))
        assert (await _post(site.url, body, headers))[0] == 200
        sent.append((body, headers))
    replays = 0
    for _ in range(200):
        site.clock.advance(rng.uniform(0, 3))
        body, headers = rng.choice(sent)
        status, _, _ = await _post(site.url, body, headers)
        assert status in (409, 401)  # replayed, or by now out of tolerance
        replays += status == 409
    assert sorted(site.handled) == sorted(f"m{i}" for i in range(50))
    assert replays > 100


async def test_past_the_ttl_a_replay_is_stale(serve: Serve) -> None:
    """Once the id is forgotten (2 x tolerance) the timestamp is long out of tolerance: 401."""
    site = await serve(WebhookReceiverConfig(tolerance=10))
    body = b"{}"
    headers = webhook_headers("m-old", body, NEW, timestamp=int(site.clock.time()))
    assert (await _post(site.url, body, headers))[0] == 200
    site.clock.advance(21)
    status, _, payload = await _post(site.url, body, headers)
    assert status == 401 and b"stale_timestamp" in payload
    assert site.handled == ["m-old"]


@pytest.mark.parametrize(
    "timestamp",
    [None, "", "abc", "12a", "-5", "1e9", "\u0661\u0662", "9" * 30, "0"],
)
async def test_missing_garbage_and_stale_timestamps_are_refused(
    serve: Serve, timestamp: str | None
) -> None:
    """No timestamp, a non-integer one or one far off the clock: 401, handler not called."""
    site = await serve()
    body = b"{}"
    headers = webhook_headers("m-ts", body, NEW, timestamp=int(site.clock.time()))
    if timestamp is None:
        del headers["webhook-timestamp"]
    else:
        headers["webhook-timestamp"] = timestamp
    status, _, _ = await _post(site.url, body, headers)
    assert status == 401
    assert site.handled == []


async def test_rotation_accepts_both_secrets_and_refuses_a_stranger(serve: Serve) -> None:
    """During a rotation the old and the new secret verify; any other secret is refused."""
    site = await serve()
    now = int(site.clock.time())
    for msg_id, secret, expected in (("a", OLD, 200), ("b", NEW, 200), ("c", STRANGER, 401)):
        headers = webhook_headers(msg_id, b"{}", secret, timestamp=now)
        assert (await _post(site.url, b"{}", headers))[0] == expected
    assert site.handled == ["a", "b"]


async def test_a_body_over_the_limit_is_413_and_not_handled(serve: Serve) -> None:
    """max_body bounds the raw body: 413 problem+json before verification."""
    site = await serve(WebhookReceiverConfig(max_body=1000))
    body = b"x" * 1001
    headers = webhook_headers("big", body, NEW, timestamp=int(site.clock.time()))
    status, resp_headers, _ = await _post(site.url, body, headers)
    assert status == 413 and resp_headers["Content-Type"].startswith("application/problem+json")
    assert site.handled == []


async def test_a_failed_handler_lets_the_retry_run(serve: Serve) -> None:
    """A handler that raised released the id: the sender's retry is handled once."""
    site = await serve()
    site.fail_next = True
    body = b"{}"
    headers = webhook_headers("retry-me", body, NEW, timestamp=int(site.clock.time()))
    assert (await _post(site.url, body, headers))[0] == 500
    assert (await _post(site.url, body, headers))[0] == 200
    assert (await _post(site.url, body, headers))[0] == 200
    assert site.handled == ["retry-me"]


async def test_a_handler_answering_5xx_lets_the_retry_run(serve: Serve) -> None:
    """A handler that returned a 5xx did not handle the message: the retry runs it again."""
    site = await serve()
    site.answer_503_next = True
    body = b"{}"
    headers = webhook_headers("retry-5xx", body, NEW, timestamp=int(site.clock.time()))
    assert (await _post(site.url, body, headers))[0] == 503
    assert (await _post(site.url, body, headers))[0] == 200
    assert site.handled == ["retry-5xx"]


async def test_a_concurrent_copy_gets_409_with_retry_after(serve: Serve) -> None:
    """While the handler runs, a copy of the message gets 409 + Retry-After."""
    site = await serve(WebhookReceiverConfig(lease=12), blocking=True)
    body = b"{}"
    headers = webhook_headers("slow", body, NEW, timestamp=int(site.clock.time()))
    first = asyncio.create_task(_post(site.url, body, headers))
    await asyncio.wait_for(site.entered.wait(), timeout(10))
    status, resp_headers, _ = await _post(site.url, body, headers)
    assert status == 409 and resp_headers["Retry-After"] == "12"
    site.gate.set()
    assert (await first)[0] == 200
    assert site.handled == ["slow"]


def test_a_replay_ttl_shorter_than_twice_the_tolerance_is_refused() -> None:
    """replay_ttl < 2 x tolerance could forget an id that is still fresh: ConfigError."""
    with pytest.raises(ConfigError) as info:
        WebhookReceiverConfig(tolerance=300, replay_ttl=30)
    assert info.value.field == "replay_ttl"


@pytest.mark.parametrize(
    ("field", "value"),
    [("tolerance", float("nan")), ("lease", 0), ("max_body", 1.5), ("on_replay", "drop")],
)
def test_bad_settings_are_refused(field: str, value: object) -> None:
    """Non-finite, zero, fractional or unknown settings raise ConfigError naming them."""
    with pytest.raises(ConfigError) as info:
        WebhookReceiverConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field


async def test_two_receivers_sharing_an_sqlite_cache_handle_once(tmp_path: object) -> None:
    """Two receivers (as two processes would) on one SQLite replay cache: one handler run."""
    from pathlib import Path

    from fokha_integration.dedup import DedupCache, SQLiteDedupBackend

    db = Path(str(tmp_path)) / "ids.db"
    handled: list[str] = []

    async def handler(request: web.Request, event: WebhookEvent) -> None:
        handled.append(event.id)

    runners, urls, caches = [], [], []
    for _ in range(2):
        cache = DedupCache(SQLiteDedupBackend(db))
        caches.append(cache)
        receiver = webhook_receiver(handler, secret=NEW, cache=cache)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}/hook")
    try:
        headers = webhook_headers("shared-1", b"{}", NEW)
        statuses = [(await _post(url, b"{}", headers))[0] for url in urls + urls]
    finally:
        for runner in runners:
            await runner.cleanup()
        for cache in caches:
            await cache.close()
    assert statuses == [200, 200, 200, 200]
    assert handled == ["shared-1"]
