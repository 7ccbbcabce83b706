"""Demo section: a HealthMonitor watching a local service, serving /health, alerting."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ..health import (
    AlertRouter,
    HealthMonitor,
    HealthServer,
    HealthStatus,
    StatusChange,
    breaker_check,
    http_check,
    loop_lag_check,
)
from ..models import Envelope
from ..resilience import CircuitBreaker

if TYPE_CHECKING:
    from . import DemoContext


class _Inbox:
    """Stands in for the SignalQueue: anything with ``async def deliver(envelope)``."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self.arrived = asyncio.Event()

    async def deliver(self, envelope: Envelope) -> None:
        self.got.append(envelope)
        self.arrived.set()

    async def next(self) -> Envelope:
        while not self.got:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return self.got.pop(0)


async def _start_quotes(port: int) -> web.AppRunner:
    async def quote(request: web.Request) -> web.Response:
        return web.json_response({"EURUSD": 1.0842})

    app = web.Application()
    app.router.add_get("/quote", quote)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner


async def run(ctx: DemoContext) -> None:
    """Watch a quotes service and a breaker; take the service down and bring it back."""
    quotes = await _start_quotes(0)
    port = int(quotes.addresses[0][1])
    breaker = CircuitBreaker("broker-api")
    inbox = _Inbox()
    router = AlertRouter(sink=inbox, min_interval=0, reminder_interval=None)
    changed = asyncio.Event()
    overall: list[HealthStatus] = []

    def on_change(change: StatusChange) -> None:
        if change.check is None:
            overall.append(change.new)
            changed.set()

    monitor = HealthMonitor(
        [
            http_check(
                f"http://127.0.0.1:{port}/quote", component="quotes", interval=0.1,
                timeout=1.0, fail_after=2, recover_after=2,
            ),
            breaker_check(breaker, interval=0.1),
            loop_lag_check(interval=0.5),
        ],
        listeners=[router, on_change],
        spread_start=False,
    )  # fmt: skip

    async def wait_overall(status: HealthStatus) -> None:
        while not overall or overall[-1] is not status:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 10)

    async with monitor, HealthServer(monitor) as server:
        ctx.say(f"health endpoints on {server.url}/health (/live, /ready, /metrics)")
        await wait_overall(HealthStatus.PASS)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"{server.url}/health") as resp:
                doc = await resp.json(content_type=None)
                ctx.say(f"GET /health -> {resp.status} {resp.content_type}")
            for line in json.dumps(doc, indent=2).splitlines():
                ctx.say("  " + line)
            if doc["status"] != "pass":
                raise AssertionError(f"expected pass, got {doc['status']}")

            breaker.trip("demo: broker API misbehaving")
            await wait_overall(HealthStatus.WARN)
            ctx.say("breaker opened -> status warn (degraded, still serving): 200")
            breaker.reset()
            await wait_overall(HealthStatus.PASS)

            await quotes.cleanup()
            ctx.say("quotes service stopped ...")
            await wait_overall(HealthStatus.FAIL)
            async with http.get(f"{server.url}/health/ready") as resp:
                ctx.say(f"GET /health/ready -> {resp.status} (critical check failing)")
                if resp.status != 503:
                    raise AssertionError("expected 503")
            quotes = await _start_quotes(port)
            ctx.say("quotes service back ...")
            await wait_overall(HealthStatus.PASS)
            async with http.get(f"{server.url}/metrics") as resp:
                text = await resp.text()
            ctx.say(f"GET /metrics -> {len(text.splitlines())} lines, e.g.:")
            for line in text.splitlines():
                if line.startswith("fokha_health_check_runs_total"):
                    ctx.say("  " + line)

    notices: list[Envelope] = []
    while inbox.got or len(notices) < 4:
        notices.append(await inbox.next())
    await router.close()
    await quotes.cleanup()
    for n in notices:
        ctx.say(f"notice {n.type}: {n.payload['text']}")
    kinds = [n.type for n in notices]
    if kinds.count("health.alert") != 2 or kinds.count("health.resolved") != 2:
        raise AssertionError(f"expected two alerts and two resolves, got {kinds}")
