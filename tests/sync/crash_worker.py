"""Processes for the crash test: a sync server or a pushing client, killed with SIGKILL at random.

``python -m tests.sync.crash_worker server STORE PORT`` serves sync_app (STORE is
``sqlite:PATH`` or ``postgres:DSN``) and prints READY. ``... client DB URL N BATCH LOG``
queues mutations 1..N (mutation i puts ``k{i % 97}`` = ``{"i": i}``), syncs until the
outbox is empty, appends ``<pid> <duplicates>`` to LOG after every sync, prints DONE.
"""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from fokha_integration.errors import BackendUnavailableError
from fokha_integration.sync import SyncService, SyncStore
from fokha_integration.sync._app import sync_app
from fokha_integration.sync._client import SyncClient, SyncClientConfig

KEYS = 97


def open_store(spec: str) -> SyncStore:
    """The store named by ``sqlite:PATH`` or ``postgres:DSN``."""
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from fokha_integration.sync.sqlite import SQLiteSyncStore

        return SQLiteSyncStore(where)
    from fokha_integration.sync.postgres import PostgresSyncStore

    return PostgresSyncStore(where)


async def serve(spec: str, port: int) -> None:
    """Serve until killed."""
    svc = SyncService(open_store(spec), ["w"])
    await svc.start()
    root = web.Application()
    root.add_subapp("/sync", sync_app(svc))
    runner = web.AppRunner(root)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


async def push(db: str, url: str, n: int, batch: int, log: str) -> None:
    """Queue the remaining mutations and sync until everything is acknowledged."""
    client = SyncClient(
        db, url, ["w"], client_id="crash", config=SyncClientConfig(push_batch=batch)
    )

    def note() -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {client.stats().duplicates}\n")

    async def attempt() -> None:
        try:
            await client.sync()
        except BackendUnavailableError:
            await asyncio.sleep(0.02)  # the server is down: retry shortly (the parent restarts it)
        note()

    head = await client.outbox_head()
    for i in range(head, n):
        await client.put("w", f"k{i % KEYS}", {"i": i})
        if i % batch == batch - 1:
            await attempt()
    while client.stats().pending:
        await attempt()
    await client.close()
    print("DONE", flush=True)


def main() -> None:
    """Entry point."""
    mode = sys.argv[1]
    if mode == "server":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(push(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]))


if __name__ == "__main__":
    main()
