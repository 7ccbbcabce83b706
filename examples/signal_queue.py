"""Durable fan-out of trading signals: an SQLite outbox, a signed webhook and an EA callable.

Run ``python examples/signal_queue.py``: it starts a local receiver standing in for
n8n, publishes three signals (one of them twice) and prints where each arrived.
Kill it half way and run it again: whatever was accepted and not yet delivered is
delivered on the next start.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from fokha_integration import (
    CallableSink,
    Direction,
    Envelope,
    Signal,
    SignalQueue,
    SQLiteOutboxStore,
    WebhookSink,
    generate_webhook_secret,
    verify_webhook,
)

SECRET = generate_webhook_secret()


async def n8n_stand_in(request: web.Request) -> web.Response:
    body = await request.read()
    msg_id = verify_webhook(request.headers, body, SECRET)  # raises on a bad signature
    print(f"n8n received {msg_id}")
    return web.Response(status=204)


async def execute_on_ea(envelope: Envelope) -> None:
    payload = envelope.payload
    print(f"EA executes {payload['direction']} {payload['volume']} {payload['symbol']}")


async def main() -> None:
    app = web.Application()
    app.router.add_post("/webhook/signals", n8n_stand_in)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()  # a free port
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook/signals"
    print(f"n8n stand-in listening on {url}")

    webhook = WebhookSink(url, secret=SECRET)
    queue = SignalQueue(
        store=SQLiteOutboxStore("signals-outbox.db"),
        sinks=[webhook, CallableSink(execute_on_ea, name="ea", execution=True)],
    )
    try:
        async with queue:
            buy = Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)
            sell = Signal(symbol="XAUUSD", direction=Direction.SELL, volume=0.2)
            for signal in (buy, sell, buy):
                result = await queue.publish(signal)
                print(f"publish {signal.symbol}: {result.status}")
            await queue.wait_idle(timeout=10)
            for name, m in (await queue.metrics()).items():
                print(f"{name}: delivered={m.delivered} pending={m.pending} retried={m.retried}")
    finally:
        await webhook.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
