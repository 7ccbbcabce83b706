"""A delivering process for the crash tests (killed with SIGKILL at random moments).

``python -m tests.queue.crash_worker STORE LOCATION WEBHOOK_URL SECRET FILE_OUT STATS_OUT CONSUMER``

STORE is ``sqlite`` (LOCATION: the database path) or ``redis`` (LOCATION: the URL).
It delivers to two at-least-once sinks: a file-appending sink (one envelope id per
line, O_APPEND) and a WebhookSink posting to the receiver process. For Redis it
writes how many entries it reclaimed from dead consumers to STATS_OUT.
"""

from __future__ import annotations

import asyncio
import os
import sys

from fokha_integration.models import Envelope
from fokha_integration.queue import (
    CallableSink,
    OutboxStore,
    SignalQueue,
    SQLiteOutboxStore,
    WebhookSink,
)
from fokha_integration.resilience import RetryPolicy


async def main(argv: list[str]) -> None:
    kind, location, url, secret, file_out, stats_out, consumer = argv
    store: OutboxStore
    reclaimed = None
    if kind == "sqlite":
        store = SQLiteOutboxStore(location)
    else:
        from fokha_integration.queue.redis import RedisStreamsStore

        redis_store = RedisStreamsStore(location, consumer=consumer, reclaim_idle=0.5)
        store = redis_store
        reclaimed = redis_store

    async def append(envelope: Envelope) -> None:
        fd = os.open(file_out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (envelope.id + "\n").encode())
        finally:
            os.close(fd)

    sinks = [CallableSink(append, name="file"), WebhookSink(url, secret=secret, timeout=5)]
    policy = RetryPolicy(attempts=1000, initial=0.01, max_delay=0.2, deadline=None)
    async with SignalQueue(store=store, sinks=sinks, retry=policy, poll_interval=0.02):
        print("ready", flush=True)
        while True:
            await asyncio.sleep(0.1)  # the process runs until killed
            if reclaimed is not None:
                tmp = stats_out + ".tmp"
                with open(tmp, "w") as f:
                    f.write(str(reclaimed.reclaimed))
                os.replace(tmp, stats_out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
