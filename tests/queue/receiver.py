"""A real webhook receiver (aiohttp on 127.0.0.1) that verifies Standard Webhooks signatures.

Used in-process by the webhook tests (its ``mode`` switches between answering
200, 503, 429 with Retry-After, 400, or hanging) and as a separate process by the
crash tests (``python -m tests.queue.receiver PORT SECRET OUTFILE``), where it
appends each verified envelope id to OUTFILE.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field

from aiohttp import web

from fokha_integration.http import WebhookVerificationError, verify_webhook


@dataclass
class WebhookReceiver:
    """The receiver's state: what arrived, what was refused, and how to answer next."""

    secret: str
    mode: str = "ok"
    retry_after: str = "1"
    outfile: str | None = None
    ids: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    hits: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release_hang: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        try:
            msg_id = verify_webhook(request.headers, body, self.secret)
        except WebhookVerificationError as exc:
            self.refused.append(exc.code)
            return web.Response(status=401, text=exc.code)
        if json.loads(body)["id"] != msg_id:
            self.refused.append("id_mismatch")
            return web.Response(status=400)
        if self.mode == "503":
            return web.Response(status=503)
        if self.mode == "429":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if self.mode == "400":
            return web.Response(status=400)
        if self.mode == "hang":
            await self.release_hang.wait()
            return web.Response(status=503)
        self.ids.append(msg_id)
        if self.outfile is not None:
            fd = os.open(self.outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (msg_id + "\n").encode())
            finally:
                os.close(fd)
        self.arrived.set()
        return web.Response(status=204)

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


async def _main(port: int, secret: str, outfile: str) -> None:
    receiver = WebhookReceiver(secret=secret, outfile=outfile)
    await receiver.start(port)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
