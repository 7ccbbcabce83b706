"""A delivering process on the PostgreSQL outbox for the crash test (SIGKILLed at random).

``python -m tests.queue.pg_crash_worker DSN WEBHOOK_URL SECRET FILE_OUT CONSUMER``

Delivers to two at-least-once sinks, as ``tests.queue.crash_worker`` does: a
file-appending sink (one envelope id per line, O_APPEND) and a WebhookSink posting
to the receiver process. Its leases run out one second after it dies. It writes
how many entries it took over from dead owners to FILE_OUT.CONSUMER.taken.
"""

from __future__ import annotations

import asyncio
import os
import sys

from fokha_integration.models import Envelope
from fokha_integration.queue import CallableSink, SignalQueue, WebhookSink
from fokha_integration.queue.postgres import PostgresOutboxConfig, PostgresOutboxStore
from fokha_integration.resilience import RetryPolicy


async def main(argv: list[str]) -> None:
    dsn, url, secret, file_out, consumer = argv
    config = PostgresOutboxConfig(consumer=consumer, lease=1.0, idle_wait=0.5)
    store = PostgresOutboxStore(dsn, config=config)

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
        stats = f"{file_out}.{consumer}.taken"
        while True:  # runs until killed
            await asyncio.sleep(0.1)
            with open(stats + ".tmp", "w") as f:
                f.write(str(store.taken_over))
            os.replace(stats + ".tmp", stats)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
