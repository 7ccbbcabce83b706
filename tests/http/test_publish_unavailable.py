"""POST /v1/signals when the outbox cannot take the signal: 503, nothing kept under the key."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from fokha_integration.dedup import DedupCache
from fokha_integration.http import api_app
from fokha_integration.queue import CallableSink, SignalQueue
from fokha_integration.ws import TokenAuthenticator

SECRET = b"s" * 32


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/signals"


async def test_a_publish_the_outbox_refused_is_not_stored_under_its_key() -> None:
    """A closed queue answers 503 + Retry-After; the same key then succeeds on a working one."""
    auth = TokenAuthenticator(SECRET)
    token = auth.issue("app", ttl=60)
    keys = DedupCache()
    delivered: list[str] = []

    async def sink(envelope: object) -> None:
        delivered.append(str(getattr(envelope, "id", "")))

    broken = SignalQueue(sinks=[CallableSink(sink, name="s")])
    await broken.close()  # publishing now raises ClosedError
    working = SignalQueue(sinks=[CallableSink(sink, name="s")])
    await working.start()
    runner1, url1 = await _serve(api_app(queue=broken, authenticator=auth, idempotency_cache=keys))
    runner2, url2 = await _serve(api_app(queue=working, authenticator=auth, idempotency_cache=keys))
    body = {
        "id": "sig-1",
        "symbol": "EURUSD",
        "direction": "BUY",
        "volume": 0.1,
        "created_at": "2026-11-30T00:00:00.000000Z",
    }
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "key-1"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url1, json=body, headers=headers) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "1"
                assert r.headers.get("Idempotent-Replayed") is None
            async with s.post(url2, json=body, headers=headers) as r:
                assert r.status == 201, await r.text()
                assert (await r.json())["status"] == "accepted"
        await working.wait_idle(timeout=10)
        assert delivered == ["sig-1"]
    finally:
        await runner1.cleanup()
        await runner2.cleanup()
        await working.close()
        await keys.close()
