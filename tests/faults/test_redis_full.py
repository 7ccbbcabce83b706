"""A full Redis (``maxmemory`` reached, ``noeviction``) under the Redis Streams outbox
store, the Redis dedup backend and the WebSocket Redis broker.

Redis then refuses every command that may grow memory with an ``OOM`` error, and
every command inside a ``MULTI``; plain reads and deletes still work. Asserted: a
publish made while Redis is full is refused with ``BackendUnavailableError`` and
leaves nothing behind; every accepted signal is delivered exactly once, before,
during and after the fault; a dedup claim is ``BackendUnavailableError`` under
``fail_mode="closed"`` and a degraded ``FIRST`` under ``fail_mode="open"``, like any
other Redis that cannot serve; a refused broker publish takes no sequence number.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from fokha_integration.dedup import ClaimStatus, DedupCache
from fokha_integration.errors import BackendUnavailableError
from fokha_integration.models import Envelope
from fokha_integration.queue import SignalQueue
from fokha_integration.resilience import RetryPolicy
from tests.faults._lag import LoopLagSampler
from tests.faults._queue_support import Ledger, check_invariant
from tests.support import RedisServer, free_port, require_redis, timeout

ATTEMPTS = 4
FAST = RetryPolicy(attempts=ATTEMPTS, initial=0.01, max_delay=0.2, deadline=None)
FILL_LIMIT = 16 * 1024 * 1024  # filled up to this...
FULL_LIMIT = 8 * 1024 * 1024  # ...then the limit is lowered to this (see ``fill``)
FILLER_DB = 1  # the filler lives in its own database: freeing it leaves db 0 alone
PREFIX = "{fokha:queue}"  # RedisStreamsStore's default key prefix


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with a small ``maxmemory`` and ``noeviction``."""
    require_redis()
    server = RedisServer(
        port=free_port(),
        workdir=tmp_path,
        persistence=(
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            str(FILL_LIMIT),
            "--maxmemory-policy",
            "noeviction",
        ),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(small_redis: RedisServer) -> AsyncIterator[Any]:
    """A redis-py client on the filler database of the test's server."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=small_redis.port, db=FILLER_DB)
    try:
        yield client
    finally:
        await client.aclose()


async def fill(admin: Any) -> None:
    """Fill Redis until it refuses writes, then lower ``maxmemory`` below what it holds.

    Redis refuses a write while its used memory is over the limit. Right after the
    first refusal it is over by anything from a byte to one value, and a few freed
    client buffers could bring it back under; lowering the limit by half leaves a
    margin of megabytes, so every write is refused until the filler is deleted.
    """
    from redis.exceptions import OutOfMemoryError

    chunk = b"x" * (256 * 1024)
    for i in range(4 * FILL_LIMIT // len(chunk)):
        try:
            await admin.set(f"filler:{i}", chunk)
        except OutOfMemoryError:
            break
    else:
        raise AssertionError("Redis never refused a write: maxmemory is not in force")
    await admin.config_set("maxmemory", FULL_LIMIT)
    info = await admin.info("memory")
    assert info["used_memory"] > FULL_LIMIT + 4 * 1024 * 1024, info["used_memory"]


async def free(admin: Any) -> None:
    """Delete the filler (``FLUSHDB`` is allowed on a full Redis)."""
    await admin.flushdb()
    info = await admin.info("memory")
    assert info["used_memory"] < FULL_LIMIT, info["used_memory"]


def envelopes(n: int, prefix: str) -> list[Envelope]:
    return [
        # One symbol each: no entry waits behind another of its key while the sink is held.
        Envelope(type="signal", key=f"{prefix}{i}", payload={"symbol": f"{prefix}{i}", "n": i})
        for i in range(n)
    ]


async def wait_for(condition: Any, seconds: float) -> None:
    """Poll ``condition()`` until it holds, failing after ``seconds`` (scaled)."""
    deadline = asyncio.get_running_loop().time() + timeout(seconds)
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_a_full_redis_refuses_publishes_and_loses_nothing(
    small_redis: RedisServer, admin: Any, loop_lag: LoopLagSampler
) -> None:
    """While Redis is full a publish raises BackendUnavailableError and stores nothing
    (no stream entry, no id marker; publishing it again later is accepted); entries
    accepted before are delivered while it is full, and once memory is freed every
    accepted signal has reached the sink exactly once, with no dead letter."""
    import redis.asyncio as aioredis

    from fokha_integration.queue.redis import RedisStreamsStore

    data = aioredis.Redis(host="127.0.0.1", port=small_redis.port, db=0)
    gate = asyncio.Event()

    async def held(envelope: Envelope) -> None:
        await gate.wait()  # deliveries of the first signals finish while Redis is full

    ledger = Ledger()
    store = RedisStreamsStore(small_redis.url, timeout=1.0, consumer="c1")
    accepted: list[str] = []
    try:
        async with SignalQueue(store=store, sinks=[ledger.sink("a", held)], retry=FAST) as q:
            for env in envelopes(10, "before"):
                result = await q.publish(env)
                assert result.accepted
                accepted.append(result.id)
            await wait_for(lambda: len(ledger.calls["a"]) == 10, 10)

            await fill(admin)
            refused = envelopes(5, "full")
            for env in refused:
                with pytest.raises(BackendUnavailableError):
                    await q.publish(env)
            # Nothing of a refused publish reached Redis: no stream entry, no id marker.
            assert await data.xlen(f"{PREFIX}:s:a") == 10
            for env in refused:
                assert not await data.exists(f"{PREFIX}:id:{env.id}")

            gate.set()  # the sink answers; the acknowledgements meet the full Redis
            # XACK and XDEL are allowed by a full Redis (they free memory): the
            # acknowledgements land although every write that grows Redis is refused.
            await wait_for(lambda: sum(ledger.ok["a"].values()) == 10, 10)
            await q.wait_idle(timeout=timeout(10))
            assert await data.xlen(f"{PREFIX}:s:a") == 0
            assert q.stats().sinks[0].store_errors == 0
            assert q.stats().accepted == 10  # the refused publishes are not counted
            await free(admin)

            for env in refused:  # the same envelopes again: accepted now
                result = await q.publish(env)
                assert result.accepted, result
                accepted.append(result.id)
            for env in envelopes(10, "after"):
                result = await q.publish(env)
                assert result.accepted
                accepted.append(result.id)
            await q.wait_idle(timeout=timeout(20))
            dead = await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
            assert dead == {"a": {}}
            assert sorted(ledger.ok["a"]) == sorted(accepted)
            # Failed acknowledgements never handed an entry to the sink again.
            assert set(ledger.calls["a"].values()) == {1}
            assert q.stats().accepted == len(accepted)
            assert await data.xlen(f"{PREFIX}:s:a") == 0  # every entry acknowledged
    finally:
        await data.aclose()


async def test_a_full_redis_is_unavailable_to_dedup(small_redis: RedisServer, admin: Any) -> None:
    """Redis full: fail_mode="closed" raises BackendUnavailableError for new and held
    keys, fail_mode="open" answers a degraded FIRST; a refused claim takes nothing,
    and a key claimed before the fault is still held after it."""
    from fokha_integration.dedup.redis import RedisDedupBackend

    def cache(mode: Literal["closed", "open"]) -> DedupCache:
        backend = RedisDedupBackend(
            small_redis.url, namespace="full", socket_timeout=1, connect_timeout=1
        )
        return DedupCache(backend, fail_mode=mode)

    closed, opened = cache("closed"), cache("open")
    try:
        assert (await closed.claim("before")).status is ClaimStatus.FIRST

        await fill(admin)
        for key in ("during", "before"):
            with pytest.raises(BackendUnavailableError) as info:
                await closed.claim(key)
            assert info.value.backend == "redis"
        with pytest.raises(BackendUnavailableError):
            await closed.claim("leased", lease=5)
        with pytest.raises(BackendUnavailableError):
            await closed.claim_many(["m1", "m2"])
        answer = await opened.claim("during")
        assert (answer.status, answer.degraded) == (ClaimStatus.FIRST, True)
        assert opened.stats().fail_open == 1
        assert closed.stats().fail_open == 0

        await free(admin)
        # The refused claims took nothing; the key claimed before the fault is kept.
        for key in ("during", "leased", "m1", "m2"):
            assert (await closed.claim(key)).status is ClaimStatus.FIRST, key
        assert (await closed.claim("before")).status is ClaimStatus.DUPLICATE
        assert not (await opened.claim("during")).degraded
    finally:
        await closed.close()
        await opened.close()


async def test_a_full_redis_refuses_broker_publishes_without_a_gap(
    small_redis: RedisServer, admin: Any
) -> None:
    """WebSocket RedisBroker on a full Redis: a publish raises BackendUnavailableError
    and takes no sequence number (live clients see 1..n with no gap, same epoch, once
    memory is freed); a resume meanwhile gets a temporary `unavailable` error, and
    after it recovers exactly what it missed."""
    from fokha_integration.ws import WebSocketServer
    from fokha_integration.ws.brokers.redis import RedisBroker
    from tests.ws.support import RawClient

    srv = await WebSocketServer(broker=RedisBroker(small_redis.url, op_timeout=1.0)).start()
    clients: list[RawClient] = []
    try:
        live = await RawClient.open(srv.url)
        clients.append(live)
        await live.request("subscribe", channels=[{"channel": "signals.f", "mode": "all"}])
        first = [await srv.publish("signals.f", {"i": i}) for i in range(5)]

        await fill(admin)
        for _ in range(3):
            with pytest.raises(BackendUnavailableError):
                await srv.publish("signals.f", {"i": "refused"})
        resumer = await RawClient.open(srv.url)
        clients.append(resumer)
        since = {"epoch": first[1].epoch, "seq": first[1].seq}
        answer = await resumer.request(
            "subscribe", channels=[{"channel": "signals.f", "since": since}]
        )
        assert (answer["type"], answer["code"], answer["temporary"]) == (
            "error",
            "unavailable",
            True,
        )

        await free(admin)
        later = [await srv.publish("signals.f", {"i": i}) for i in range(5, 10)]
        assert {p.epoch for p in first + later} == {first[0].epoch}
        assert [p.seq for p in first + later] == list(range(1, 11))
        got = await live.messages(10)
        assert [(m["seq"], m["data"]) for m in got] == [(i + 1, {"i": i}) for i in range(10)]

        ack = await resumer.request(
            "subscribe", channels=[{"channel": "signals.f", "since": since}]
        )
        assert ack["channels"][0]["recovered"] is True
        missed = await resumer.messages(8)
        assert [m["seq"] for m in missed] == list(range(3, 11))
    finally:
        for client in clients:
            await client.ws.close()
        await srv.close()
