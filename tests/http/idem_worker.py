"""An aiohttp app with idempotency_middleware on an SQLite DedupCache, run as a subprocess.

``python -m tests.http.idem_worker PORT DB LOG MODE LEASE``: ``POST /orders`` appends
``start <key>`` to LOG, then in MODE ``hang`` waits forever (the test SIGKILLs the
process there), in MODE ``ok`` appends ``done <key>`` and answers 201.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from fokha_integration.dedup import DedupCache, SQLiteDedupBackend
from fokha_integration.http.idempotency import (
    IdempotencyConfig,
    idempotency_middleware,
    idempotent,
)


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def main(port: int, db: str, log: str, mode: str, lease: float) -> None:
    cache = DedupCache(SQLiteDedupBackend(db))
    config = IdempotencyConfig(lease=lease)

    @idempotent
    async def create(request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        _append(log, f"start {key}")
        if mode == "hang":
            await asyncio.Event().wait()
        _append(log, f"done {key}")
        return web.json_response({"order": key, "pid": os.getpid()}, status=201)

    app = web.Application(middlewares=[idempotency_middleware(cache, config=config)])
    app.router.add_post("/orders", create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
