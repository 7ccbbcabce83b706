"""SignalQueue.drain: stop fetching, finish what is under way, leave the rest for the next start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fokha_integration.models import Direction, Envelope, Signal
from fokha_integration.queue import (
    CallableSink,
    MemoryOutboxStore,
    OutboxEntry,
    SignalQueue,
    SQLiteOutboxStore,
)
from tests.support import timeout


def _signal(i: int) -> Signal:
    return Signal(symbol=f"S{i}", direction=Direction.BUY, volume=0.1, strategy=f"drain-{i}")


async def test_drain_finishes_calls_under_way_and_leaves_the_rest(tmp_path: Path) -> None:
    """Deliveries under way at drain time finish once; unfetched entries wait in the store
    and are delivered once after a restart; nobody receives anything twice."""
    delivered: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> None:
        started.set()
        await release.wait()
        delivered.append(envelope.id)

    db = tmp_path / "outbox.db"
    queue = SignalQueue(
        store=SQLiteOutboxStore(db), sinks=[CallableSink(slow, name="slow")], max_in_flight=2
    )
    await queue.start()
    ids = [(await queue.publish(_signal(i))).id for i in range(20)]
    await asyncio.wait_for(started.wait(), timeout(10))
    draining = asyncio.create_task(queue.drain(timeout(10)))
    await asyncio.sleep(0)  # the drain stops the fetcher before the calls may end
    release.set()
    assert await draining is True
    first = list(delivered)
    # Only the calls under way when the drain began (at most max_in_flight) ran.
    assert 1 <= len(first) <= 2
    await queue.close()

    again: list[str] = []

    async def fast(envelope: Envelope) -> None:
        again.append(envelope.id)

    queue2 = SignalQueue(store=SQLiteOutboxStore(db), sinks=[CallableSink(fast, name="slow")])
    async with queue2:
        await queue2.wait_idle(timeout=timeout(20))
    assert sorted(first + again) == sorted(ids)  # each exactly once across the two runs


async def test_drain_returns_false_when_a_call_outlives_the_timeout(tmp_path: Path) -> None:
    """A call that does not finish in time makes drain say so; close() then cancels it."""
    started = asyncio.Event()

    async def stuck(envelope: Envelope) -> None:
        started.set()
        await asyncio.Event().wait()

    queue = SignalQueue(
        store=SQLiteOutboxStore(tmp_path / "o.db"), sinks=[CallableSink(stuck, name="stuck")]
    )
    await queue.start()
    await queue.publish(_signal(1))
    await asyncio.wait_for(started.wait(), timeout(10))
    assert await queue.drain(0.05) is False
    await queue.close()


class SwallowingStore(MemoryOutboxStore):
    """A store whose fetch, once armed, swallows the cancellation it gets and returns
    nothing (what a Redis client can do with a cancelled read)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.in_fetch = asyncio.Event()
        self.swallowed = 0

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        if not self.armed:
            return await super().fetch(sink, limit=limit)
        self.in_fetch.set()
        try:
            await asyncio.Event().wait()  # a read that never answers
        except asyncio.CancelledError:
            self.swallowed += 1
        return []


async def test_drain_ends_the_fetcher_even_when_the_store_swallows_its_cancellation() -> None:
    """drain() returns when the store's fetch swallows the cancellation drain sends (the
    fetcher stops on the drain flag), and close() after it returns too."""
    store = SwallowingStore()
    queue = SignalQueue(store=store, sinks=[CallableSink(lambda e: None, name="s")])
    await queue.start()
    store.armed = True
    await asyncio.wait_for(store.in_fetch.wait(), timeout(5))
    assert await asyncio.wait_for(queue.drain(timeout(1)), timeout(5)) is True
    assert store.swallowed == 1
    await asyncio.wait_for(queue.close(), timeout(5))
