"""One test suite for every OutboxStore backend (memory, SQLite, Redis Streams)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.errors import BackendError, BackendUnavailableError, ConfigError
from fokha_integration.models import Envelope
from fokha_integration.queue import AttemptRecord, DeadLetter, OutboxEntry, OutboxStore
from tests.queue.conftest import StoreFactory
from tests.support import RedisServer, free_port, timeout


def env(key: str = "k", n: int = 0) -> Envelope:
    return Envelope(type="signal", key=key, payload={"n": n})


def letter(entry_env: Envelope, sink: str, reason: str = "max_attempts") -> DeadLetter:
    return DeadLetter(
        sink=sink,
        envelope=entry_env,
        reason=reason,
        detail="boom",
        attempts=(AttemptRecord(1, 1.0, 0.01, "RuntimeError: boom"),),
        dead_at=2.0,
    )


async def opened(factory: StoreFactory, sinks: list[str], **kw: object) -> OutboxStore:
    store = factory(**kw)
    await store.open(sinks)
    return store


async def test_append_fans_out_to_every_registered_sink(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """An appended envelope is pending once for each registered sink, oldest first."""
    _, factory = store_factory
    store = await opened(factory, ["a", "b"])
    envs = [env(n=i) for i in range(5)]
    for e in envs:
        assert await store.append(e) is True
    for sink in ("a", "b"):
        got = await store.fetch(sink, limit=10)
        assert [x.envelope for x in got] == envs
        assert all(x.sink == sink for x in got)
        count, oldest = await store.stats(sink)
        assert count == 5
        assert oldest is not None


async def test_append_of_a_known_id_is_a_no_op(store_factory: tuple[str, StoreFactory]) -> None:
    """Appending the same envelope id twice stores it once and returns False."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    e = env()
    assert await store.append(e) is True
    assert await store.append(e) is False
    assert (await store.stats("a"))[0] == 1


async def test_append_with_no_registered_sink_is_refused(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """An envelope no sink would receive is refused, not silently kept."""
    _, factory = store_factory
    store = await opened(factory, [])
    with pytest.raises(ConfigError):
        await store.append(env())


async def test_fetch_leases_and_release_gives_back(store_factory: tuple[str, StoreFactory]) -> None:
    """A leased entry is not fetched again until released; limit is honoured."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    for i in range(3):
        await store.append(env(n=i))
    first = await store.fetch("a", limit=2)
    assert [x.envelope.payload["n"] for x in first] == [0, 1]
    second = await store.fetch("a", limit=10)
    assert [x.envelope.payload["n"] for x in second] == [2]
    assert await store.fetch("a", limit=10) == []
    await store.release(first[0])
    again = await store.fetch("a", limit=10)
    assert [x.envelope.payload["n"] for x in again] == [0]


async def test_fetch_after_a_release_skips_leased_rows_past_the_released_one(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """After a release, small fetches hand out the released entry and then the next
    free one, however many leased entries lie between (found by Hypothesis)."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    for i in range(4):
        await store.append(env(n=i))
    first = await store.fetch("a", limit=3)
    await store.release(first[0])
    got = [await store.fetch("a", limit=1) for _ in range(3)]
    assert [[x.envelope.payload["n"] for x in batch] for batch in got] == [[0], [3], []]


async def test_ack_removes_only_that_sinks_entry(store_factory: tuple[str, StoreFactory]) -> None:
    """Acknowledging for one sink leaves the entry pending for the others."""
    _, factory = store_factory
    store = await opened(factory, ["a", "b"])
    await store.append(env())
    (ea,) = await store.fetch("a", limit=5)
    await store.ack(ea)
    await store.ack(ea)  # idempotent
    assert (await store.stats("a")) == (0, None)
    assert (await store.stats("b"))[0] == 1
    assert await store.fetch("a", limit=5) == []


async def test_dead_letter_keeps_reason_and_history_and_replays(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """A dead letter leaves pending, keeps reason and attempts, and replay brings it back."""
    _, factory = store_factory
    store = await opened(factory, ["a", "b"])
    e = env()
    await store.append(e)
    (ea,) = await store.fetch("a", limit=5)
    await store.dead_letter(ea, letter(e, "a"))
    assert (await store.stats("a"))[0] == 0
    dead = await store.dead_letters("a")
    assert len(dead) == 1
    assert dead[0].reason == "max_attempts"
    assert dead[0].envelope == e
    assert dead[0].attempts[0].error == "RuntimeError: boom"
    assert await store.dead_letters("b") == []
    assert await store.replay("a") == 1
    assert await store.dead_letters() == []
    (back,) = await store.fetch("a", limit=5)
    assert back.envelope.id == e.id
    assert (await store.stats("b"))[0] == 1


async def test_a_replayed_dead_letter_comes_back_in_its_place(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """A dead letter put back by a replay is handed out before the entries appended
    after it that are still pending (a key's order holds across a replay). Redis
    Streams cannot put an entry back in place: there a replay appends it anew, after
    them (docs/signal-queue.md says so)."""
    name, factory = store_factory
    store = await opened(factory, ["a"])
    first, second = env(key="k", n=1), env(key="k", n=2)
    for e in (first, second):
        assert await store.append(e) is True
    got = await store.fetch("a", limit=2)
    assert [x.envelope for x in got] == [first, second]
    await store.dead_letter(got[0], letter(first, "a"))
    assert await store.replay("a") == 1
    await store.release(got[1])
    again = await store.fetch("a", limit=2)
    expected = [second, first] if name == "redis" else [first, second]
    assert [x.envelope for x in again] == expected


async def test_replay_only_the_chosen_refs(store_factory: tuple[str, StoreFactory]) -> None:
    """replay(refs=...) replays exactly those dead letters."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    envs = [env(key=f"k{i}", n=i) for i in range(3)]
    for e in envs:
        await store.append(e)
    for entry in await store.fetch("a", limit=5):
        await store.dead_letter(entry, letter(entry.envelope, "a"))
    dead = await store.dead_letters("a")
    assert [d.envelope.payload["n"] for d in dead] == [0, 1, 2]
    assert await store.replay("a", refs=[dead[1].ref]) == 1
    left = await store.dead_letters("a")
    assert [d.envelope.payload["n"] for d in left] == [0, 2]
    got = await store.fetch("a", limit=5)
    assert [x.envelope.payload["n"] for x in got] == [1]


async def test_stats_report_the_oldest_pending(store_factory: tuple[str, StoreFactory]) -> None:
    """stats() gives the pending count and the enqueue time of the oldest entry."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    before = time.time()
    await store.append(env(n=1))
    await store.append(env(n=2))
    count, oldest = await store.stats("a")
    assert count == 2
    assert oldest is not None and before - 1 <= oldest <= time.time() + 1


async def test_a_new_store_object_resumes_unacknowledged_entries(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """After a 'crash' (a new store object), leased but unacknowledged entries come back."""
    kind, factory = store_factory
    if kind == "memory":
        pytest.skip("the memory store does not outlive its object")
    kw: dict[str, object] = {"reclaim_idle": 0.2} if kind == "redis" else {}
    first = await opened(factory, ["a"], **kw)
    for i in range(3):
        await first.append(env(key=f"k{i}", n=i))
    leased = await first.fetch("a", limit=5)
    assert len(leased) == 3
    await first.ack(leased[0])
    # the first process dies here without acknowledging the rest
    second = await opened(factory, ["a"], **kw)
    deadline = time.monotonic() + timeout(10)
    got: list[int] = []
    while len(got) < 2 and time.monotonic() < deadline:
        got += [x.envelope.payload["n"] for x in await second.fetch("a", limit=5)]
        if len(got) < 2:
            await asyncio.sleep(0.05)  # polling the store for the reclaim idle time to pass
    assert sorted(got) == [1, 2]


async def test_memory_store_refuses_appends_past_its_bound() -> None:
    """The memory store raises BackendError instead of growing past max_pending."""
    from fokha_integration.queue import MemoryOutboxStore

    store = MemoryOutboxStore(max_pending=3)
    await store.open(["a"])
    for i in range(3):
        await store.append(env(n=i))
    with pytest.raises(BackendError):
        await store.append(env(n=9))


async def test_memory_store_log_is_trimmed_behind_its_slowest_sink() -> None:
    """The shared log keeps what some sink still holds, in order, and no more.

    Sink ``a`` takes and acknowledges everything at once; ``b`` holds the oldest
    entry, then acknowledges the rest newest first. Counts, oldest times and the
    bound follow each sink's own backlog, and once both are done the log is empty.
    """
    from fokha_integration.queue import MemoryOutboxStore

    clock = ManualClock()
    store = MemoryOutboxStore(max_pending=5000, clock=clock)
    await store.open(["a", "b"])
    envs = [env(n=i) for i in range(3000)]
    for e in envs:
        assert await store.append(e) is True
        clock.advance(1.0)
    for entry in await store.fetch("a", limit=5000):
        await store.ack(entry)
    assert await store.stats("a") == (0, None)
    held = await store.fetch("b", limit=3000)
    assert [x.envelope.id for x in held] == [e.id for e in envs]
    first_time = held[0].enqueued_at
    for entry in reversed(held[1:]):
        await store.ack(entry)
    assert await store.stats("b") == (1, first_time)
    assert await store.append(envs[0]) is False  # still held by b: a known id
    assert await store.append(envs[1]) is True  # done by both sinks: new again
    await store.ack(held[0])
    assert (await store.stats("b"))[0] == 1  # only envs[1]'s new entry
    for sink in ("a", "b"):
        for entry in await store.fetch(sink, limit=10):
            await store.ack(entry)
    assert await store.stats("a") == (0, None) and await store.stats("b") == (0, None)
    assert len(store._log) - store._live == 0  # nothing kept for nobody
    assert len(store._log) < 1024  # and the trimmed head was compacted away


async def test_sqlite_store_refuses_appends_past_its_bound(tmp_path: object) -> None:
    """The SQLite store raises BackendError once a sink's backlog passes max_pending."""
    from pathlib import Path

    from fokha_integration.queue import SQLiteOutboxStore

    assert isinstance(tmp_path, Path)
    store = SQLiteOutboxStore(tmp_path / "b.db", max_pending=5)
    await store.open(["a"])
    try:

        async def fill() -> None:
            for i in range(600):
                await store.append(env(n=i))

        with pytest.raises(BackendError):
            await fill()
        assert (await store.stats("a"))[0] <= 5 + 256
    finally:
        await store.close()


async def test_sqlite_append_watchers_hear_of_fetchable_rows_only(tmp_path: Path) -> None:
    """watch_appends: the callback runs once a group of appends is committed, and a
    fetch started from inside it already finds the rows; a repeated id (nothing
    stored) calls nobody; after unwatch nobody is called."""
    from fokha_integration.queue import SQLiteOutboxStore, WatchedOutboxStore

    store = SQLiteOutboxStore(tmp_path / "o.db")
    assert isinstance(store, WatchedOutboxStore)
    await store.open(["a"])
    fetches: list[asyncio.Task[list[OutboxEntry]]] = []

    def watcher() -> None:
        fetches.append(asyncio.ensure_future(store.fetch("a", limit=10)))

    unwatch = store.watch_appends(watcher)
    first, second = env(key="w1"), env(key="w2")
    assert await asyncio.gather(store.append(first), store.append(second)) == [True, True]
    assert len(fetches) == 1  # one call for the group
    got = await fetches[0]
    assert [x.envelope for x in got] == [first, second]
    assert await store.append(first) is False
    assert len(fetches) == 1
    unwatch()
    assert await store.append(env(key="w3")) is True
    assert len(fetches) == 1
    await store.close()


async def test_sqlite_ack_nowait_that_fails_keeps_the_lease_and_retries(tmp_path: Path) -> None:
    """An acknowledgement the queue does not wait for, if its delete fails, keeps the
    entry leased (not handed out again: no redelivery storm) and is retried until the
    delete succeeds."""
    import sqlite3

    from fokha_integration.queue import SQLiteOutboxStore

    path = tmp_path / "o.db"

    def rename(old: str, new: str) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
            conn.commit()
        finally:
            conn.close()

    store = SQLiteOutboxStore(path)
    await store.open(["a"])
    try:
        await store.append(env(n=1))
        [entry] = await store.fetch("a", limit=10)
        rename("pending", "pending_away")  # the delete will fail: no such table
        store.ack_nowait(entry)
        # The store's one database thread runs calls in order: once this answers, the
        # failed delete has been handled.
        await store.registered_sinks()
        rename("pending_away", "pending")
        assert await store.fetch("a", limit=10) == []  # still leased: not redelivered
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(5)
        while await store.stats("a") != (0, None):
            assert loop.time() < deadline, "the failed acknowledgement was never retried"
            await asyncio.sleep(0.01)  # the retry runs on a timer of the store's own
    finally:
        await store.close()


async def test_redis_store_reclaims_a_dead_consumers_entries(redis_url: str) -> None:
    """Entries read by a consumer that died are taken over with XAUTOCLAIM and counted."""
    from fokha_integration.queue.redis import RedisStreamsStore

    dead = RedisStreamsStore(redis_url, consumer="dead", reclaim_idle=0.1)
    live = RedisStreamsStore(redis_url, consumer="live", reclaim_idle=0.1)
    try:
        await dead.open(["a"])
        await live.open(["a"])
        for i in range(4):
            await dead.append(env(key=f"k{i}", n=i))
        assert len(await dead.fetch("a", limit=10)) == 4
        got: list[int] = []
        deadline = time.monotonic() + timeout(10)
        while len(got) < 4 and time.monotonic() < deadline:
            got += [x.envelope.payload["n"] for x in await live.fetch("a", limit=10)]
            if len(got) < 4:
                await asyncio.sleep(0.05)  # polling until the entries have been idle long enough
        assert sorted(got) == [0, 1, 2, 3]
        assert live.reclaimed == 4
    finally:
        await dead.close()
        await live.close()


async def test_sqlite_store_deletes_delivered_rows_but_keeps_dead_letters(tmp_path: object) -> None:
    """Delivered outbox rows are compacted away; a dead letter's row stays replayable."""
    import sqlite3
    from pathlib import Path

    from fokha_integration.queue import SQLiteOutboxStore

    assert isinstance(tmp_path, Path)
    path = tmp_path / "c.db"
    store = SQLiteOutboxStore(path)
    await store.open(["a"])
    try:
        for i in range(1100):
            await store.append(env(key=f"k{i}", n=i))
        entries = await store.fetch("a", limit=2000)
        await store.dead_letter(entries[0], letter(entries[0].envelope, "a"))
        for e in entries[1:]:
            await store.ack(e)
        rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert rows < 200
        assert await store.replay("a") == 1
        (back,) = await store.fetch("a", limit=5)
        assert back.envelope == entries[0].envelope
    finally:
        await store.close()


async def test_concurrent_appends_each_get_their_own_answer(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """Appends made together (one pipeline or commit) answer each caller for its envelope."""
    _, factory = store_factory
    store = await opened(factory, ["a"])
    unique = [env(key=f"k{i}", n=i) for i in range(30)]
    calls = unique + unique[:10]  # ten ids appended twice in the same batch
    answers = await asyncio.gather(*(store.append(e) for e in calls))
    by_id: dict[str, list[bool]] = {}
    for e, answer in zip(calls, answers, strict=True):
        by_id.setdefault(e.id, []).append(answer)
    assert all(sorted(a) == ([False, True] if len(a) == 2 else [True]) for a in by_id.values())
    got = await store.fetch("a", limit=100)
    assert sorted(x.envelope.id for x in got) == sorted(e.id for e in unique)


async def test_a_large_group_with_known_ids_scattered_in_it(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """A group of appends larger than one insert statement, with ids already stored
    between new ones: each new id gets its own entry for every sink, in append order,
    and each known id answers False."""
    _, factory = store_factory
    store = await opened(factory, ["a", "b"])
    group = [env(key=f"g{i}", n=i) for i in range(300)]
    known = group[5:300:7]
    for e in known:
        assert await store.append(e) is True
    answers = await asyncio.gather(*(store.append(e) for e in group))
    known_ids = {e.id for e in known}
    assert answers == [e.id not in known_ids for e in group]
    for sink in ("a", "b"):
        got = await store.fetch(sink, limit=1000)
        fresh = [e.id for e in group if e.id not in known_ids]
        assert [x.envelope.id for x in got] == [e.id for e in known] + fresh


async def test_concurrent_acks_of_several_sinks_all_land(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """Acks made together for two sinks remove exactly those entries."""
    _, factory = store_factory
    store = await opened(factory, ["a", "b"])
    for i in range(20):
        await store.append(env(key=f"k{i}", n=i))
    a = await store.fetch("a", limit=100)
    b = await store.fetch("b", limit=100)
    await asyncio.gather(*(store.ack(x) for x in a + b[:5]))
    assert (await store.stats("a"))[0] == 0
    assert (await store.stats("b"))[0] == 15


async def test_redis_store_bound_applies_inside_one_pipeline(redis_url: str) -> None:
    """Past max_pending, appends batched together fail one by one, in order."""
    from fokha_integration.queue.redis import RedisStreamsStore

    store = RedisStreamsStore(redis_url, max_pending=3, prefix="bound-test")
    await store.open(["a"])
    try:
        answers = await asyncio.gather(
            *(store.append(env(key=f"k{i}", n=i)) for i in range(5)), return_exceptions=True
        )
    finally:
        await store.close()
    assert answers[:3] == [True, True, True]
    assert all(isinstance(x, BackendError) for x in answers[3:]), answers


async def test_redis_store_batch_fails_every_caller_and_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """With Redis down, every append and ack of a batch gets the typed error; then it recovers."""
    from fokha_integration.queue.redis import RedisStreamsStore

    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    store = RedisStreamsStore(server.url, timeout=2.0)
    try:
        await store.open(["a"])
        await store.append(env(key="before"))
        (entry,) = await store.fetch("a", limit=10)
        server.stop()
        appends = await asyncio.gather(
            *(store.append(env(key=f"k{i}", n=i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(x, BackendUnavailableError) for x in appends), appends
        with pytest.raises(BackendUnavailableError):
            await store.ack(entry)
        server.start()
        # The server kept nothing (no persistence): register again, then it works.
        await store.open(["a"])
        assert await store.append(env(key="after")) is True
        assert [x.envelope.key for x in await store.fetch("a", limit=10)] == ["after"]
    finally:
        await store.close()
        server.stop()


async def test_sqlite_grouped_appends_from_two_writers_keep_seq_and_envelope_together(
    tmp_path: Path,
) -> None:
    """Two store objects (two connections, as two processes) append in groups at once:
    every row's seq maps to its own envelope, in the writer's cache and in the file."""
    from fokha_integration.queue import SQLiteOutboxStore

    path = tmp_path / "o.db"
    a, b = SQLiteOutboxStore(path), SQLiteOutboxStore(path)
    await a.open(["s"])
    await b.open(["s"])
    try:
        envs_a = [env(key=f"a{i}", n=i) for i in range(300)]
        envs_b = [env(key=f"b{i}", n=i) for i in range(300)]
        answers = await asyncio.gather(
            *(a.append(e) for e in envs_a), *(b.append(e) for e in envs_b)
        )
        assert all(answers)
        cached = {x.ref: x.envelope for x in await a.fetch("s", limit=1000)}
        reader = SQLiteOutboxStore(path)  # a new object: no cache, parses the rows
        await reader.open(["s"])
        from_file = {x.ref: x.envelope for x in await reader.fetch("s", limit=1000)}
        await reader.close()
    finally:
        await a.close()
        await b.close()
    assert len(from_file) == 600
    assert {e.id for e in from_file.values()} == {e.id for e in envs_a + envs_b}
    assert cached == from_file


async def test_sqlite_fetch_survives_parse_cache_evictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch mixing cached and uncached rows returns them all, even when parsing
    the uncached ones evicts the cached ones (a tiny cache makes that certain)."""
    from fokha_integration.queue import SQLiteOutboxStore, _sqlite

    monkeypatch.setattr(_sqlite, "_PARSE_CACHE", 4)
    path = tmp_path / "o.db"
    reader, writer = SQLiteOutboxStore(path), SQLiteOutboxStore(path)
    await reader.open(["s"])
    await writer.open(["s"])
    try:
        mine = [env(key=f"r{i}", n=i) for i in range(10)]  # the last 4 stay cached
        theirs = [env(key=f"w{i}", n=i) for i in range(10)]  # never in reader's cache
        for e in mine:
            await reader.append(e)
        for e in theirs:
            await writer.append(e)
        got = await reader.fetch("s", limit=100)
    finally:
        await reader.close()
        await writer.close()
    assert [x.envelope for x in got] == mine + theirs
