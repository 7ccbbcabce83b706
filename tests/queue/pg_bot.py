"""A trading bot process for the transactional-outbox tests (SIGKILLed mid-transaction).

``python -m tests.queue.pg_bot DSN ORDER``: opens a transaction that updates the
``positions`` row of EURUSD and publishes a signal with
:func:`publish_in_transaction`, in the ORDER given (``publish-first`` or
``update-first``); after the first statement it prints "between" and waits on
stdin, where the test SIGKILLs it. Given ``commit`` as ORDER it runs both
statements, commits, and prints "committed".
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from fokha_integration.models import Direction, Signal
from fokha_integration.queue.postgres import publish_in_transaction


async def main(dsn: str, order: str) -> None:
    conn = await asyncpg.connect(dsn)
    signal = Signal(id="sig-eurusd-1", symbol="EURUSD", direction=Direction.BUY, volume=0.1)

    async def update() -> None:
        await conn.execute("UPDATE positions SET volume = volume + 0.1 WHERE symbol = 'EURUSD'")

    async def publish() -> None:
        await publish_in_transaction(conn, signal)

    steps = [update, publish] if order in ("update-first", "commit") else [publish, update]
    tx = conn.transaction()
    await tx.start()
    await steps[0]()
    if order == "commit":
        await steps[1]()
        await tx.commit()
        print("committed", flush=True)
        return
    print("between", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await steps[1]()  # never reached: the test kills the process first
    await tx.commit()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
