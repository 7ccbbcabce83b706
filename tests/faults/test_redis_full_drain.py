"""Review finding (fixed): a Redis filled by the outbox's own backlog never drained.

Under ``maxmemory`` + ``noeviction`` Redis refuses every command queued in a
``MULTI``, while ``XACK`` and ``XDEL`` on their own are allowed (they are not
``denyoom``; ``XDEL`` frees memory). ``RedisStreamsStore`` acknowledged with a
``MULTI`` (XACK + XDEL), so once the outbox itself had filled Redis, every
acknowledgement was refused and retried forever: the sink had delivered everything,
yet the stream never shrank and Redis stayed full until an operator stepped in.
It now acknowledges with a plain pipeline.
(tests/faults/test_redis_full.py frees memory by deleting an unrelated filler, so
it does not see this.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fokha_integration.models import Envelope
from fokha_integration.queue import SignalQueue
from tests.faults._queue_support import Ledger
from tests.faults.test_redis_full import (  # noqa: F401  (fixtures)
    FAST,
    PREFIX,
    admin,
    envelopes,
    small_redis,
)
from tests.support import RedisServer, timeout


async def test_an_outbox_that_filled_redis_drains_once_its_sink_catches_up(
    small_redis: RedisServer,  # noqa: F811 - the fixtures of test_redis_full
    admin: Any,  # noqa: F811
) -> None:
    import redis.asyncio as aioredis

    from fokha_integration.queue.redis import RedisStreamsStore

    data = aioredis.Redis(host="127.0.0.1", port=small_redis.port, db=0)
    gate = asyncio.Event()

    async def held(envelope: Envelope) -> None:
        await gate.wait()

    ledger = Ledger()
    store = RedisStreamsStore(small_redis.url, timeout=1.0, consumer="c1")
    try:
        async with SignalQueue(store=store, sinks=[ledger.sink("a", held)], retry=FAST) as q:
            for env in envelopes(200, "backlog"):
                assert (await q.publish(env)).accepted
            # The backlog is what fills Redis: lower maxmemory below what it uses now.
            used = (await admin.info("memory"))["used_memory"]
            await admin.config_set("maxmemory", used - 64 * 1024)
            with pytest.raises(Exception):  # noqa: B017 - full: the next publish is refused
                await q.publish(envelopes(1, "full")[0])
            gate.set()  # the sink catches up
            # Delivering and acknowledging (XACK + XDEL, neither refused on its own by a
            # full Redis) would free the memory the backlog holds.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout(15)
            while await data.xlen(f"{PREFIX}:s:a") and loop.time() < deadline:
                await asyncio.sleep(0.1)  # polling Redis: no event to wait on
            assert await data.xlen(f"{PREFIX}:s:a") == 0
    finally:
        await admin.config_set("maxmemory", 0)
        await data.aclose()
