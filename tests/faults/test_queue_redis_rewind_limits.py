"""Found by the second review of the rewind detection: an entry held at close that
Redis forgot was put back only when the rewind had been noticed before close (now
close() reads the counter when it holds entries); and the limit of what a store
can notice at all (documented)."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration.queue.redis import RedisStreamsStore
from tests.faults.test_queue_redis_snapshot import again, batch, rdb_redis  # noqa: F401
from tests.support import RedisServer


@pytest.mark.redis
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
async def test_a_delivering_store_cannot_notice_a_rewind_of_appends_it_never_saw(
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
    # The documented limit: three accepted envelopes are gone, and the delivering
    # store cannot tell (Redis keeps no trace of them, and this store never saw their
    # numbers). The producer would have noticed on its next append; it had exited.
    assert consumer.rewinds == 0
