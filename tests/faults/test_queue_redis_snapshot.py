"""The Redis Streams outbox store under a Redis restarted from an older RDB snapshot
(issue 13): SIGKILLed after appends and acks the snapshot does not hold.

Asserts the invariant for this fault: every accepted signal is delivered at least
once, or is covered by the rewind the store reports (an ERROR log, ``rewinds`` and
``rewound`` on the store, ``store_rewinds`` in the queue's stats and metrics);
a signal is delivered twice only when the snapshot undid its acknowledgement; and
the signals this process held when Redis went back are delivered, also when the
queue is closed before their delivery finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from fokha_integration.errors import BackendUnavailableError
from fokha_integration.models import Envelope
from fokha_integration.queue import SignalQueue, SinkConfig
from fokha_integration.resilience import RetryPolicy
from tests.faults._queue_support import Ledger
from tests.support import RedisServer, free_port, timeout

T = TypeVar("T")
KEYS: dict[str, str] = {}  # envelope id -> key, for readable failures
FAST = RetryPolicy(attempts=50, initial=0.01, max_delay=0.2, deadline=None)


@pytest.fixture
def rdb_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server persisting only by RDB snapshots (SAVE), never 6379."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed; .ci/run should have installed it")
        pytest.skip("redis-server binary not found on PATH")
    pytest.importorskip("redis")
    # No save points and no AOF: the only state a restart loads is the last SAVE.
    server = RedisServer(
        port=free_port(),
        workdir=tmp_path,
        persistence=("--save", "", "--appendonly", "no"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def batch(prefix: str, n: int) -> list[Envelope]:
    # No "symbol": every envelope has its own order key, so deliveries run in parallel.
    return [Envelope(type="signal", key=f"{prefix}{i}", payload={"n": i}) for i in range(n)]


class Gates:
    """Holds the deliveries of envelopes whose key starts with a gated prefix."""

    def __init__(self, *prefixes: str) -> None:
        self.gates = {p: asyncio.Event() for p in prefixes}
        self.arrived: set[str] = set()
        self.progress = asyncio.Event()

    async def body(self, envelope: Envelope) -> None:
        self.arrived.add(envelope.key)
        self.progress.set()
        for prefix, gate in self.gates.items():
            if envelope.key.startswith(prefix):
                await gate.wait()

    def open(self, prefix: str) -> None:
        self.gates[prefix].set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition()`` holds, woken by each sink call or delivery."""

        async def wait() -> None:
            while not condition():
                self.progress.clear()
                await self.progress.wait()

        try:
            await asyncio.wait_for(wait(), timeout(20))
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}")


async def publish_all(q: SignalQueue, envs: list[Envelope]) -> list[str]:
    """Publish each envelope (again after a broken connection: publishing again is
    safe); all must be accepted."""
    accepted = []
    for env in envs:
        result = await again(lambda env=env: q.publish(env))  # type: ignore[misc]
        assert result.accepted, result
        accepted.append(env.id)
        KEYS[env.id] = env.key
    return accepted


async def again(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, repeated while it fails on a pooled connection Redis's restart broke."""
    for _ in range(9):
        try:
            return await call()
        except BackendUnavailableError:
            continue
    return await call()


@pytest.mark.redis
async def test_redis_restored_from_an_older_snapshot_loses_nothing_silently(
    rdb_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis SIGKILLed and restarted from a SAVE taken before some appends and acks:
    the store reports how far its history went back; envelopes it held are
    delivered (one of them only after the queue was closed and opened again);
    only envelopes acknowledged after the snapshot are delivered twice; and every
    undelivered envelope is within the reported rewind."""
    import redis.asyncio as aioredis

    from fokha_integration.queue.redis import RedisStreamsStore

    caplog.set_level(logging.ERROR, logger="fokha_integration.queue.redis")
    ledger = Ledger()
    gates = Gates("held", "stuck", "last")
    delivered: list[str] = []

    def on_delivered(sink: str, envelope: Envelope) -> None:
        delivered.append(envelope.key)
        gates.progress.set()

    def delivered_all(keys: list[str]) -> Callable[[], bool]:
        return lambda: set(keys) <= set(delivered)

    def make_queue() -> tuple[SignalQueue, RedisStreamsStore]:
        store = RedisStreamsStore(rdb_redis.url, timeout=0.5, reclaim_idle=5.0, consumer="c1")
        queue = SignalQueue(
            store=store,
            sinks=[ledger.sink("a", gates.body)],
            retry=FAST,
            # Four in flight: the fifth and later envelopes wait in the stream.
            sink_config={"a": SinkConfig(max_in_flight=4, delivery_timeout=None)},
            on_delivered=on_delivered,
            close_timeout=0.5,
        )
        return queue, store

    admin = aioredis.from_url(rdb_redis.url)
    q, store = make_queue()
    await q.start()
    try:
        early = await publish_all(q, batch("early", 6))
        await gates.until(delivered_all([f"early{i}" for i in range(6)]), "early deliveries")
        held = await publish_all(q, batch("held", 3))  # delivered, acked after the SAVE
        await gates.until(lambda: len(gates.arrived & {f"held{i}" for i in range(3)}) == 3, "held")
        await admin.save()  # the snapshot: 9 appends, held0..2 pending
        gates.open("held")
        after = await publish_all(q, batch("after", 6))  # appended and delivered after it
        await gates.until(
            delivered_all([f"held{i}" for i in range(3)] + [f"after{i}" for i in range(6)]),
            "deliveries after the snapshot",
        )
        stuck = await publish_all(q, batch("stuck", 3))  # in flight when Redis goes back
        last = await publish_all(q, batch("last", 1))  # in flight until the queue closes
        waiting = await publish_all(q, batch("waiting", 4))  # appended, never fetched
        await gates.until(
            lambda: {"stuck0", "stuck1", "stuck2", "last0"} <= gates.arrived, "stuck in flight"
        )
        await asyncio.to_thread(rdb_redis.kill)  # a crash: no shutdown save
        await asyncio.to_thread(rdb_redis.start)  # loads the SAVE: 9 appends, 3 pending
        gates.open("stuck")
        later = await publish_all(q, batch("later", 3))
        await gates.until(
            delivered_all([f"stuck{i}" for i in range(3)] + [f"later{i}" for i in range(3)]),
            "deliveries after the restore",
        )
        # The undone acks are delivered again (the rewind makes the store re-read its
        # pending entries at once); last0 is still in flight.
        await gates.until(lambda: all(ledger.ok["a"][e] >= 2 for e in held), "held again")
        stats_before_close = q.stats()
        metrics = await again(q.metrics)
    finally:
        await q.close()  # last0 is cut short: the store puts it back for the next opener

    # A new process (same consumer name) delivers what the first one still held.
    gates.open("last")
    q2, store2 = make_queue()
    async with q2:
        await q2.wait_idle(timeout=timeout(10))
    await admin.aclose()

    accepted = early + held + after + stuck + last + waiting + later
    lost = sorted(KEYS[e] for e in accepted if ledger.ok["a"][e] == 0)
    twice = {KEYS[e] for e in accepted if ledger.ok["a"][e] > 1}
    rewinds = getattr(store, "rewinds", 0)
    print(f"lost {lost}, delivered twice {sorted(twice)}, rewinds {rewinds}")
    # Detection: the store saw its history go back, and said so, loudly.
    assert rewinds >= 1, f"silent loss: {lost} never delivered, nothing reported"
    assert stats_before_close.store_rewinds == store.rewinds
    assert all(m.store_rewinds == store.rewinds for m in metrics.values())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "went back" in r.message]
    assert errors, "no ERROR log about the rewind"
    # Nothing lost silently: what this process held arrived; what never arrived was
    # appended after the snapshot and never fetched, and the reported rewind covers it.
    assert set(lost) <= {KEYS[e] for e in waiting}, lost
    assert len(lost) <= store.rewound
    # Duplicates only for entries whose acknowledgement the snapshot undid.
    assert twice == {KEYS[e] for e in held}, twice
    assert store2.rewinds == 0


@pytest.mark.redis
async def test_a_released_entry_redis_forgot_is_appended_again(rdb_redis: RedisServer) -> None:
    """After a rewind found by an append, a leased entry Redis no longer has is put
    back when released (fetched again, same envelope, new ref); one Redis still has
    is not copied; the rewind is counted once, by how many appends it went back."""
    import redis.asyncio as aioredis

    from fokha_integration.queue.redis import RedisStreamsStore

    store = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="c1")
    await store.open(["a"])
    admin = aioredis.from_url(rdb_redis.url)
    try:
        kept, gone, late, new = batch("e", 4)
        assert await store.append(kept)
        await admin.save()  # the snapshot: one append
        await admin.aclose()
        assert await store.append(gone)
        assert await store.append(late)
        leased = await store.fetch("a", limit=10)
        assert [e.envelope.id for e in leased] == [kept.id, gone.id, late.id]
        await asyncio.to_thread(rdb_redis.kill)
        await asyncio.to_thread(rdb_redis.start)
        assert await again(lambda: store.append(new))  # numbered 2 again: a rewind
        assert (store.rewinds, store.rewound) == (1, 2)
        for entry in leased[:2]:
            await store.release(entry)
        again_ = await store.fetch("a", limit=10)
        ids = [e.envelope.id for e in again_]
        # kept: Redis has it again, as never delivered; gone: put back (a new
        # entry); new: appended after the restore; late: still leased here.
        assert sorted(ids) == sorted([kept.id, gone.id, new.id]), ids
        [copy] = [e for e in again_ if e.envelope.id == gone.id]
        assert copy.ref != leased[1].ref
        assert store.rewinds == 1
    finally:
        await store.close()


@pytest.mark.redis
async def test_a_redis_that_came_back_empty_is_reported_too(rdb_redis: RedisServer) -> None:
    """Redis restarted with nothing on disk: a fetch fails (the pooled connection, or
    NOGROUP: the consumer group is gone); the next one reports the rewind, all the way
    back, registers the sinks and creates their groups again, and the outbox works on."""
    from fokha_integration.queue.redis import RedisStreamsStore

    store = RedisStreamsStore(rdb_redis.url, timeout=0.5, consumer="c1")
    await store.open(["a"])
    try:
        for env in batch("x", 3):
            assert await store.append(env)
        assert len(await store.fetch("a", limit=10)) == 3
        await asyncio.to_thread(rdb_redis.kill)
        await asyncio.to_thread(rdb_redis.start)  # no snapshot was ever taken
        # The first fetch meets the broken pooled connection (or NOGROUP); the one
        # after it reads the counter first, finds the rewind and registers again.
        assert await again(lambda: store.fetch("a", limit=10)) == []
        assert (store.rewinds, store.rewound) == (1, 3)
        [after] = batch("y", 1)
        assert await store.append(after)  # the sink is registered again
        assert [e.envelope.id for e in await store.fetch("a", limit=10)] == [after.id]
    finally:
        await store.close()
