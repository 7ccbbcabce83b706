"""A WebSocketServer node on a RedisBroker, run as a subprocess by the scale-out tests.

Usage: python -m tests.ws.node REDIS_URL. Prints ``PORT <n>`` once it listens, then
serves until killed.
"""

from __future__ import annotations

import asyncio
import sys

from fokha_integration.ws import Limits, WebSocketServer
from fokha_integration.ws.brokers.redis import RedisBroker


async def main(redis_url: str) -> None:
    broker = RedisBroker(redis_url, history=10_000)
    async with WebSocketServer(
        broker=broker, allow_publish=True, heartbeat=1.0, limits=Limits(rate=5000, burst=5000)
    ) as srv:
        print(f"PORT {srv.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
