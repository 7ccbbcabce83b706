"""Stream live prices to WebSocket clients, and print them from a Python client.

Run it: ``python examples/ws_price_stream.py``. It starts a WebSocketServer on
127.0.0.1 (a free port; the URL is printed) with HMAC tokens, publishes a synthetic
EURUSD/GBPUSD feed, and a WebSocketClient prints what it receives for a few seconds.
Point a browser or the Flutter app at the printed URL with the printed token to
watch the same feed.
"""

from __future__ import annotations

import asyncio
import random
import secrets

from fokha_integration import TokenAuthenticator, WebSocketClient, WebSocketServer


async def feed(server: WebSocketServer, stop: asyncio.Event) -> None:
    mids = {"EURUSD": 1.0842, "GBPUSD": 1.2671}
    while not stop.is_set():
        for symbol, mid in mids.items():
            mid = mids[symbol] = round(mid + random.gauss(0, 0.0002), 5)
            await server.publish(
                f"prices.{symbol}", {"bid": round(mid - 0.00005, 5), "ask": round(mid + 0.00005, 5)}
            )
        await asyncio.sleep(0.1)


async def main() -> None:
    auth = TokenAuthenticator(secrets.token_bytes(32))
    async with WebSocketServer(port=0, authenticator=auth) as server:
        token = auth.issue("viewer", ttl=3600, channels=["prices.*"])
        print(f"server on {server.url}; token: {token}")
        stop = asyncio.Event()
        feeder = asyncio.create_task(feed(server, stop))
        async with WebSocketClient(server.url, token=token) as client:
            await client.subscribe("prices.EURUSD", "prices.GBPUSD")
            for _ in range(40):
                msg = await client.next_message(5)
                print(f"{msg.channel:<14} #{msg.seq:<4} {msg.kind:<9} {msg.data}")
        stop.set()
        await feeder
        await server.close(drain=1, retry_after=1)


if __name__ == "__main__":
    asyncio.run(main())
