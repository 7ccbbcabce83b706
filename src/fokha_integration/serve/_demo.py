"""What ``fokha serve --demo`` adds: a local stand-in for n8n and a synthetic price feed."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ._config import SinkSection

__all__ = ["price_feed", "sink_sections", "start_receiver"]


async def start_receiver(stack: contextlib.AsyncExitStack, received: deque[Any]) -> str:
    """Start a local webhook receiver (closed with ``stack``); returns its URL."""

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/webhook/fokha", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stack.push_async_callback(runner.cleanup)
    return f"http://127.0.0.1:{runner.addresses[0][1]}/webhook/fokha"


def sink_sections(configured: Sequence[SinkSection], demo_url: str) -> list[SinkSection]:
    """The configured sinks, plus a signed webhook to the demo receiver when there is one."""
    from ..http import generate_webhook_secret

    sections = list(configured)
    if demo_url:
        sections.append(
            SinkSection(
                kind="webhook",
                name="n8n",
                url=demo_url,
                secret=generate_webhook_secret(),
                attempts=3,
            )
        )
    return sections


async def price_feed(ws: Any) -> None:
    """Publish a random walk of three symbols on ``prices.*`` twice a second."""
    rng = random.Random(7)
    prices = {"EURUSD": 1.0842, "XAUUSD": 2400.0, "BTCUSD": 65000.0}
    while True:
        for symbol, price in prices.items():
            price *= 1 + rng.uniform(-0.0005, 0.0005)
            prices[symbol] = price
            spread = price * 0.00005
            await ws.publish(
                f"prices.{symbol}", {"bid": round(price, 5), "ask": round(price + spread, 5)}
            )
        await asyncio.sleep(0.5)
