"""A process that leases outbox entries and is SIGKILLed holding them.

``python -m tests.queue.pg_lease_holder DSN SINK COUNT``: opens a PostgreSQL outbox
store (lease 0.5 s), fetches COUNT entries of SINK, prints "leased", waits on stdin.
"""

from __future__ import annotations

import asyncio
import sys

from fokha_integration.queue.postgres import PostgresOutboxConfig, PostgresOutboxStore


async def main(dsn: str, sink: str, count: int) -> None:
    store = PostgresOutboxStore(dsn, config=PostgresOutboxConfig(lease=0.5, idle_wait=0))
    await store.open([sink])
    got = await store.fetch(sink, limit=count)
    assert len(got) == count, got
    print("leased", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
