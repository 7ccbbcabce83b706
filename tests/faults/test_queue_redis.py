"""The Redis Streams outbox store under a Redis that is paused (SIGSTOP), killed
(SIGKILL) and restored from its append-only file. Asserts the invariant: every
accepted signal delivered once or dead-lettered; publishes that fail say so."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fokha_integration.errors import FokhaError
from fokha_integration.models import Envelope
from fokha_integration.queue import SignalQueue
from fokha_integration.resilience import RetryPolicy
from tests.faults._lag import LoopLagSampler
from tests.faults._queue_support import Ledger, check_invariant
from tests.support import RedisServer, free_port, require_redis, timeout

ATTEMPTS = 4
FAST = RetryPolicy(attempts=ATTEMPTS, initial=0.01, max_delay=0.2, deadline=None)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server this test may pause and kill."""
    require_redis()
    # appendfsync always: a SIGKILL of the server loses nothing it acknowledged.
    server = RedisServer(
        port=free_port(),
        workdir=tmp_path,
        persistence=("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def envelopes(n: int, prefix: str) -> list[Envelope]:
    return [
        Envelope(type="signal", key=f"{prefix}{i}", payload={"symbol": f"S{i % 4}", "n": i})
        for i in range(n)
    ]


async def _publish_some(q: SignalQueue, envs: list[Envelope], accepted: list[str]) -> int:
    refused = 0
    for env in envs:
        try:
            result = await q.publish(env)
        except FokhaError:
            refused += 1
            continue
        if result.accepted:
            accepted.append(result.id)
    return refused


async def test_redis_paused_killed_and_restored(
    durable_redis: RedisServer, loop_lag: LoopLagSampler
) -> None:
    """Across a SIGSTOP and a SIGKILL + restart of Redis every accepted signal is
    delivered once, and no entry is handed over more than the policy allows."""
    from fokha_integration.queue.redis import RedisStreamsStore

    ledger = Ledger()
    store = RedisStreamsStore(durable_redis.url, timeout=0.3, reclaim_idle=30.0, consumer="c1")
    accepted: list[str] = []
    async with SignalQueue(store=store, sinks=[ledger.sink("a")], retry=FAST) as q:
        await _publish_some(q, envelopes(20, "before"), accepted)
        await q.wait_idle(timeout=timeout(10))
        durable_redis.signal(signal.SIGSTOP)
        refused = await _publish_some(q, envelopes(3, "paused"), accepted)
        durable_redis.signal(signal.SIGCONT)
        await _publish_some(q, envelopes(20, "resumed"), accepted)
        await asyncio.to_thread(durable_redis.kill)
        refused += await _publish_some(q, envelopes(3, "dead"), accepted)
        await asyncio.to_thread(durable_redis.start)  # off the loop: it polls the port
        await _publish_some(q, envelopes(20, "restored"), accepted)
        await q.wait_idle(timeout=timeout(20))
        await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert refused >= 3
    # appendfsync always: the restart lost nothing, so no rewind is reported.
    assert (store.rewinds, q.stats().store_rewinds) == (0, 0)
    # Of the 60 publishes made while Redis was up, the first one or two after each
    # fault may still fail on a broken pooled connection (refused, not lost).
    assert len(accepted) >= 50


async def test_a_failed_ack_does_not_wait_for_the_reclaim_time(
    durable_redis: RedisServer,
) -> None:
    """An entry given back while Redis is paused is fetched again right after Redis
    answers, not after reclaim_idle (the re-read flag survives a failed read)."""
    from fokha_integration.errors import BackendUnavailableError
    from fokha_integration.queue.redis import RedisStreamsStore

    store = RedisStreamsStore(durable_redis.url, timeout=0.3, reclaim_idle=30.0, consumer="c1")
    await store.open(["a"])
    try:
        assert await store.append(envelopes(1, "x")[0])
        (entry,) = await store.fetch("a", limit=10)
        await store.release(entry)
        durable_redis.signal(signal.SIGSTOP)
        with pytest.raises(BackendUnavailableError):
            await store.fetch("a", limit=10)
        durable_redis.signal(signal.SIGCONT)
        again = await asyncio.wait_for(store.fetch("a", limit=10), timeout(5))
        assert [e.ref for e in again] == [entry.ref]
    finally:
        durable_redis.signal(signal.SIGCONT)
        await store.close()
