"""Demo section: retry and a circuit breaker against a flaky local HTTP service."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ..errors import CircuitOpenError
from ..resilience import CircuitBreaker, RetryDetails, RetryPolicy, StateChange

if TYPE_CHECKING:
    from . import DemoContext


class _FlakyService:
    """A local HTTP service whose behaviour the demo switches: flaky, down, healthy."""

    def __init__(self) -> None:
        self.mode = "flaky"
        self.failures_left = 2
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.mode == "down":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "flaky" and self.failures_left > 0:
            self.failures_left -= 1
            if self.failures_left == 0:
                return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
            return web.Response(status=503, text="try again")
        return web.json_response({"price": 1.0842})


async def run(ctx: DemoContext) -> None:
    """Show retries absorbing transient errors, then a breaker isolating a dead service."""
    service = _FlakyService()
    app = web.Application()
    app.router.add_get("/price", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/price"
    ctx.say(f"flaky price service on {url}")

    retried: list[RetryDetails] = []
    changes: list[StateChange] = []
    retry = RetryPolicy(
        attempts=5, initial=0.02, max_delay=0.2, deadline=5, hooks=(retried.append,)
    )
    breaker = CircuitBreaker(
        "price-service",
        failure_threshold=3,
        open_duration=0.3,
        listeners=(changes.append,),
    )
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def fetch() -> float:
                async with session.get(url) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
                    return float(body["price"])

            price = await retry.call(breaker.call, fetch)
            for d in retried:
                status = getattr(d.exception, "status", "?")
                ctx.say(
                    f"attempt {d.attempt} got HTTP {status}; retrying in {d.delay * 1000:.0f} ms"
                )
            ctx.say(f"attempt {len(retried) + 1} succeeded: price {price}")
            assert len(retried) == 2, "expected two retried failures"

            service.mode = "down"
            ctx.say("service goes down (every request answers 503)")
            rejected = 0
            for _ in range(6):
                try:
                    await breaker.call(fetch)
                except CircuitOpenError as exc:
                    rejected += 1
                    last = exc
                except aiohttp.ClientResponseError:
                    pass
            ctx.say(
                f"breaker opened after {breaker.config.failure_threshold} failures; "
                f"{rejected} calls refused at once without touching the service "
                f"(retry after {last.retry_after:.2f}s)"
            )
            assert rejected == 3, "expected the breaker to refuse the last three calls"
            before = service.requests

            service.mode = "healthy"
            await asyncio.sleep(breaker.config.open_duration)
            price = await breaker.call(fetch)
            ctx.say(
                f"service back; after {breaker.config.open_duration}s one probe went through "
                f"({service.requests - before} request) and closed the breaker: price {price}"
            )
            for change in changes:
                ctx.say(f"  breaker {change.old.value} -> {change.new.value}: {change.reason}")
            assert breaker.state.value == "closed"
    finally:
        await runner.cleanup()
