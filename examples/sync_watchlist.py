"""A watchlist kept in step between a Python server and two offline-capable clients.

Runs on 127.0.0.1 only, in a temp dir: a SyncService on SQLite behind sync_app,
a "phone" and a "backup node" SyncClient, each with its own SQLite replica. Both
edit offline, sync, and end with the same records; a concurrent edit is settled by
last-writer-wins (HLC) and logged as a conflict.

    python examples/sync_watchlist.py
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

from aiohttp import web

from fokha_integration.sync import SyncClient, SyncService, sync_app
from fokha_integration.sync.sqlite import SQLiteSyncStore


async def main() -> None:
    """Run the walk-through."""
    with tempfile.TemporaryDirectory(prefix="fokha-sync-example-") as tmp:
        workdir = Path(tmp)
        service = SyncService(SQLiteSyncStore(workdir / "server.db"), ["watchlists"])
        await service.start()
        app = web.Application()
        app.add_subapp("/sync", sync_app(service))
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/sync"

        phone = SyncClient(workdir / "phone.db", url, ["watchlists"], client_id="alice/phone")
        backup = SyncClient(workdir / "backup.db", url, ["watchlists"], client_id="alice/backup")
        try:
            await phone.put("watchlists", "fx", {"name": "FX majors", "symbols": ["EURUSD"]})
            await phone.put("watchlists", "metals", {"name": "Metals", "symbols": ["XAUUSD"]})
            await phone.sync()
            await backup.sync()
            print("backup after first sync:", await backup.query("watchlists"))

            # Both edit "fx" while offline; the later HLC version wins everywhere.
            await phone.put("watchlists", "fx", {"name": "FX", "symbols": ["EURUSD", "GBPUSD"]})
            await backup.put("watchlists", "fx", {"name": "FX", "symbols": ["USDJPY"]})
            await backup.delete("watchlists", "metals")
            for client in (phone, backup, phone):
                await client.sync()

            print("phone :", await phone.query("watchlists"))
            print("backup:", await backup.query("watchlists"))
            assert await phone.query("watchlists") == await backup.query("watchlists")
            for entry in await service.conflicts():
                print(f"conflict #{entry.conflict_id} on {entry.id}: kept {entry.result.data}")
            print("server status:", await service.status())
        finally:
            await phone.close()
            await backup.close()
            await runner.cleanup()
            await service.close()


if __name__ == "__main__":
    asyncio.run(main())
