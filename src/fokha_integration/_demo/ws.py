"""Demo section: live price streaming over WebSocketServer to a WebSocketClient."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from ..ws import ClientState, StateEvent, TokenAuthenticator, WebSocketClient, WebSocketServer

if TYPE_CHECKING:
    from . import DemoContext


async def run(ctx: DemoContext) -> None:
    """A synthetic EURUSD/GBPUSD feed, a client printing ticks, a late joiner's snapshot."""
    auth = TokenAuthenticator("demo-secret-" + "x" * 32)
    rng = random.Random(7)
    prices = {"EURUSD": 1.0842, "GBPUSD": 1.2671}
    async with WebSocketServer(authenticator=auth, heartbeat=5) as server:
        ctx.say(f"WebSocketServer on {server.url} (HMAC tokens, prices.* conflated when slow)")

        async def feed(ticks: int) -> None:
            for _ in range(ticks):
                for symbol in prices:
                    prices[symbol] = round(prices[symbol] + rng.gauss(0, 0.0002), 5)
                    mid = prices[symbol]
                    await server.publish(
                        f"prices.{symbol}",
                        {"symbol": symbol, "bid": round(mid - 0.00005, 5),
                         "ask": round(mid + 0.00005, 5)},
                    )  # fmt: skip
                await asyncio.sleep(0.01)  # a tick every 10 ms

        states: list[str] = []

        def on_state(ev: StateEvent) -> None:
            states.append(ev.state.value)

        token = auth.issue("demo-app", ttl=60, channels=["prices.*"])
        client = WebSocketClient(server.url, token=token, on_state=on_state)
        await client.connect(timeout=5)
        await client.subscribe("prices.EURUSD", "prices.GBPUSD")
        feeder = asyncio.create_task(feed(30))
        received = []
        for _ in range(8):
            msg = await client.next_message(5)
            received.append(msg)
            ctx.say(
                f"client got {msg.channel} #{msg.seq} ({msg.kind}): "
                f"bid {msg.data['bid']} ask {msg.data['ask']}"
            )
        await feeder
        assert all(m.kind in ("update", "snapshot") for m in received)

        late = WebSocketClient(server.url, token=token)
        await late.connect(timeout=5)
        await late.subscribe("prices.EURUSD")
        snap = await late.next_message(5)
        ctx.say(
            f"a late joiner gets the current price at once: {snap.kind} #{snap.seq} "
            f"bid {snap.data['bid']}"
        )
        assert snap.kind == "snapshot"
        assert snap.seq == 30

        refused = WebSocketClient(server.url, token=token)
        await refused.connect(timeout=5)
        try:
            await refused.subscribe("signals.admin")
        except Exception as exc:
            ctx.say(f"a token limited to prices.* cannot read signals.admin: {exc}")
        else:
            raise AssertionError("subscribe to signals.admin should have been refused")
        for c in (client, late, refused):
            await c.close()
        m = server.metrics()
        ctx.say(
            f"metrics: {m.messages_published} published, {m.messages_sent} frames sent, "
            f"{m.slow_clients} slow, {m.auth_failures} auth failures"
        )
        assert ClientState.CONNECTED.value in states
