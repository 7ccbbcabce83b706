"""The HTTP layer end to end on 127.0.0.1: the REST API app, ApiClient, a webhook receiver.

Run: ``python examples/http_api.py`` (finishes in about a second).

1. The API app serves a SignalQueue whose one sink is a signed WebhookSink posting to
   a webhook receiver (the n8n side) in the same process.
2. ApiClient publishes a signal with an Idempotency-Key, then "retries" the same
   call: the app replays the stored answer and the signal is queued once.
3. The receiver verifies the signature, remembers the webhook-id, and runs its
   handler once; a replayed copy is acknowledged without running it again.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from fokha_integration.http import (
    ApiClient,
    WebhookEvent,
    api_app,
    generate_webhook_secret,
    webhook_receiver,
)
from fokha_integration.queue import SignalQueue, WebhookSink
from fokha_integration.ws import TokenAuthenticator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main() -> None:
    secret = generate_webhook_secret()
    handled = asyncio.Event()

    async def on_signal(request: web.Request, event: WebhookEvent) -> None:
        print(f"receiver: handled webhook {event.id} for {event.json()['payload']['symbol']}")
        handled.set()

    receiver = webhook_receiver(on_signal, secret=secret)
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    hook_port, api_port = free_port(), free_port()
    hook_runner = await serve(hook_app, hook_port)

    sink = WebhookSink(f"http://127.0.0.1:{hook_port}/hook", secret=secret, timeout=5)
    queue = SignalQueue(sinks=[sink])
    await queue.start()
    auth = TokenAuthenticator(b"example-api-secret-at-least-32-bytes-long")
    api_runner = await serve(api_app(queue=queue, authenticator=auth), api_port)
    token = auth.issue("flutter-app", ttl=300, channels=["signals:*"])

    async def bearer() -> str:
        return token

    signal = {
        "id": "sig-example-1",
        "symbol": "EURUSD",
        "direction": "BUY",
        "volume": 0.1,
        "created_at": "2026-11-30T12:00:00Z",
    }
    async with ApiClient(f"http://127.0.0.1:{api_port}", token_provider=bearer) as client:
        first = await client.post("/v1/signals", json=signal, idempotency_key=True)
        print(f"api: {first.status} {first.json()} (key {first.idempotency_key})")
        again = await client.post("/v1/signals", json=signal, idempotency_key=first.idempotency_key)
        replayed = again.headers.get("Idempotent-Replayed")
        print(f"api: retry answered {again.status}, replayed={replayed}")
        await asyncio.wait_for(handled.wait(), 10)
        listed = await client.get("/v1/signals")
        print(f"api: {len(listed.json()['items'])} signal(s) listed")
    print(f"receiver stats: {receiver.stats()}")

    await api_runner.cleanup()
    await queue.close()
    await sink.close()
    await hook_runner.cleanup()
    await receiver.close()


if __name__ == "__main__":
    asyncio.run(main())
