"""Review 2 (h/rewind): an entry held at close that Redis forgot is put back only
when the rewind was noticed before close (close() does not check the counter)."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration.queue.redis import RedisStreamsStore
from tests.faults.test_queue_redis_snapshot import again, batch, rdb_redis  # noqa: F401
from tests.support import RedisServer


@pytest.mark.redis
@pytest.mark.xfail(
    strict=True,
    reason="close() puts back held entries only after a rewind was already noticed: "
    "a rewind that no fetch/append saw before close loses the held entry silently",
)
async def test_entry_held_at_close_after_an_unnoticed_rewind_is_put_back(
    rdb_redis: RedisServer,  # noqa: F811
) -> None:
    import redis.asyncio as aioredis

    admin = aioredis.from_url(rdb_redis.url)
    store = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="c1")
    await store.open(["a"])
    [kept, gone] = batch("e", 2)
    try:
        assert await store.append(kept)
        await admin.save()  # the snapshot: one append
        assert await store.append(gone)
        held = await store.fetch("a", limit=10)
        assert [e.envelope.id for e in held] == [kept.id, gone.id]
        await asyncio.to_thread(rdb_redis.kill)
        await asyncio.to_thread(rdb_redis.start)
    finally:
        await store.close()  # both still held (a slow sink, a stop mid-delivery)
        await admin.aclose()
    store2 = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="c1")
    await store2.open(["a"])
    try:
        got = {e.envelope.id for e in await store2.fetch("a", limit=10)}
    finally:
        await store2.close()
    print("rewinds seen by the closing store:", store.rewinds)
    assert gone.id in got, f"{gone.id} lost silently (rewinds={store.rewinds})"


@pytest.mark.redis
@pytest.mark.xfail(
    strict=True,
    reason="a store detects only a counter below what it itself appended or read: a "
    "delivering store that had not read the lost appends reports nothing, although "
    "no other process appended (docs: 'misses a rewind only when other processes "
    "appended more envelopes than it lost')",
)
async def test_a_delivering_store_notices_a_rewind_of_appends_it_never_read(
    rdb_redis: RedisServer,  # noqa: F811
) -> None:
    import redis.asyncio as aioredis

    admin = aioredis.from_url(rdb_redis.url)
    consumer = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="c1")
    producer = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="p1")
    await consumer.open(["a"])
    await producer.open([])
    early, *late = batch("e", 4)
    try:
        assert await producer.append(early)
        [entry] = await consumer.fetch("a", limit=10)
        await consumer.ack(entry)
        await admin.save()  # the snapshot: one append, acknowledged
        for env in late:  # appended after it; the producer process then exits
            assert await producer.append(env)
        await producer.close()
        await asyncio.to_thread(rdb_redis.kill)
        await asyncio.to_thread(rdb_redis.start)
        for _ in range(3):  # the delivering process reads on (after the broken pool)
            assert await again(lambda: consumer.fetch("a", limit=10)) == []
    finally:
        await consumer.close()
        await admin.aclose()
    # Three accepted envelopes are gone and no store said so.
    assert consumer.rewinds == 1, (consumer.rewinds, producer.rewinds)
