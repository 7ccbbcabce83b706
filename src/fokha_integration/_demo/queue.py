"""Demo section: the whole spine. Signals go through a DedupCache into a SignalQueue and
fan out to a WebSocket client (the app), the EA emulator over the file bridge, and a
signed webhook (n8n), each sink with its own retries, breaker and dead letters.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..bridge import FileBridge, PollConfig
from ..bridge.emulator import EAEmulator
from ..dedup import DedupCache
from ..http import WebhookVerificationError, generate_webhook_secret, verify_webhook
from ..models import Direction, Signal
from ..queue import FileBridgeSink, SignalQueue, Sink, WebhookSink, WebSocketSink
from ..resilience import RetryPolicy
from ..ws import WebSocketClient, WebSocketServer

if TYPE_CHECKING:
    from . import DemoContext


async def run(ctx: DemoContext) -> None:
    """Publish signals (one repeated, one expired) and show where each arrived."""
    secret = generate_webhook_secret()
    received: list[str] = []
    refused: list[str] = []
    first_down = {"left": 1}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            msg_id = verify_webhook(request.headers, body, secret)
        except WebhookVerificationError as exc:
            refused.append(exc.code)
            return web.Response(status=401)
        if first_down["left"]:
            first_down["left"] -= 1
            return web.Response(status=503)  # n8n restarting: the queue retries
        received.append(msg_id)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/n8n", hook)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])

    poll = PollConfig(busy=0.001, idle=0.01)
    shown: list[str] = []
    webhook = WebhookSink(f"http://127.0.0.1:{port}/n8n", secret=secret, timeout=5)
    policy = RetryPolicy(attempts=5, initial=0.05, max_delay=0.2, deadline=None)
    try:
        with tempfile.TemporaryDirectory(prefix="fokha-demo-queue-") as tmp:
            root = Path(tmp)
            async with (
                WebSocketServer(port=0) as server,
                EAEmulator(root, poll=poll, max_volume=1.0) as ea,
                FileBridge(root, poll=poll) as bridge,
            ):
                phone = WebSocketClient(server.url)
                await phone.connect(timeout=5)
                await phone.subscribe("signals")
                sinks: list[Sink] = [
                    WebSocketSink(server, channel="signals", name="app"),
                    FileBridgeSink(bridge, name="ea", reply_timeout=5),
                    webhook,
                ]
                async with SignalQueue(dedup=DedupCache(), sinks=sinks, retry=policy) as queue:
                    now = datetime.now(timezone.utc)
                    buy = Signal(
                        symbol="EURUSD", direction=Direction.BUY, volume=0.1, strategy="demo"
                    )
                    sell = Signal(
                        symbol="XAUUSD", direction=Direction.SELL, volume=0.2, strategy="demo"
                    )
                    stale = Signal(
                        symbol="GBPUSD",
                        direction=Direction.BUY,
                        volume=0.1,
                        created_at=now - timedelta(seconds=30),
                        expires_at=now - timedelta(seconds=1),
                    )
                    for s in (buy, sell, buy, stale):
                        result = await queue.publish(s)
                        ctx.say(f"publish {s.symbol} {s.direction.value} -> {result.status}")
                    await queue.wait_idle(timeout=10)
                    dead = await queue.dead_letters()
                    metrics = await queue.metrics()
                for _ in range(3):
                    msg = await phone.next_message(5)
                    shown.append(str(msg.data["id"]))
                await phone.close()
                executed = [str(p["comment"]) for p in ea.server.positions.values()]
    finally:
        await webhook.close()
        await runner.cleanup()

    ctx.say(f"app (WebSocket client, at-most-once) showed {len(shown)} signal(s)")
    ctx.say(
        f"EA emulator (file bridge, execution) opened {len(executed)} position(s); "
        "the expired signal never reached it"
    )
    ctx.say(
        f"n8n webhook verified {len(received)} signed delivery(ies) after "
        f"{metrics['webhook'].retried} retry(ies)"
    )
    for letter in dead:
        ctx.say(
            f"dead letter: {letter.envelope.payload['symbol']} for {letter.sink} ({letter.reason})"
        )
    if sorted(executed) != sorted([buy.id, sell.id]):
        raise AssertionError(f"EA got {executed}")
    if sorted(shown) != sorted([buy.id, sell.id, stale.id]):
        raise AssertionError(f"app got {shown}")
    if sorted(received) != sorted([buy.id, sell.id, stale.id]) or refused:
        raise AssertionError(f"webhook got {received}, refused {refused}")
    if [(d.sink, d.reason) for d in dead] != [("ea", "expired")]:
        raise AssertionError(f"dead letters {dead}")
