"""Queue lifecycle edges: replays from another process, wait_idle with at-most-once
sinks in flight, and sinks closed with the queue."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from fokha_integration.models import Direction, Envelope, Signal
from fokha_integration.queue import (
    CallableSink,
    DeliveryFailedError,
    SignalQueue,
    SQLiteOutboxStore,
    WebhookSink,
)
from fokha_integration.resilience import RetryPolicy
from tests.queue.conftest import StoreFactory
from tests.support import timeout

FAST = RetryPolicy(attempts=2, initial=0.001, max_delay=0.002, deadline=None)


def sig() -> Signal:
    return Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)


async def test_a_replay_by_another_store_object_is_delivered_by_the_running_queue(
    tmp_path: Path,
) -> None:
    """Dead letters put back by a second process's store are found by the live queue."""
    path = tmp_path / "outbox.db"
    failing = True
    got: list[str] = []

    async def sink(envelope: Envelope) -> None:
        if failing:
            raise DeliveryFailedError("down")
        got.append(envelope.id)

    queue = SignalQueue(
        store=SQLiteOutboxStore(path), sinks=[CallableSink(sink, name="a")], retry=FAST
    )
    async with queue:
        signals = [sig(), sig()]
        for s in signals:
            await queue.publish(s)
        await queue.wait_idle(timeout=timeout(5))
        assert len(await queue.dead_letters()) == 2
        failing = False
        other = SQLiteOutboxStore(path)  # as `fokha queue replay --sqlite` would open it
        await other.open(["a"])
        assert await other.replay("a") == 2
        await other.close()
        await queue.wait_idle(timeout=timeout(5))
    assert sorted(got) == sorted(s.id for s in signals)


_PUBLISHER = """
import asyncio, sys
from fokha_integration.models import Envelope
from fokha_integration.queue import SQLiteOutboxStore

async def main() -> None:
    store = SQLiteOutboxStore(sys.argv[1])
    await store.open(["a", "b"])
    for i in range(int(sys.argv[2])):
        await store.append(Envelope(type="signal", key=f"o{i}", payload={"n": i}))
    await store.close()

asyncio.run(main())
"""


async def test_signals_another_process_publishes_into_the_file_are_delivered_once(
    tmp_path: Path,
) -> None:
    """While this queue publishes and delivers its own signals (handed to its workers
    from memory), a second process publishes into the same SQLite file: every signal of
    both reaches each sink exactly once."""
    path = tmp_path / "outbox.db"
    got: dict[str, list[str]] = defaultdict(list)

    def sink(name: str) -> CallableSink:
        async def deliver(envelope: Envelope) -> None:
            got[name].append(envelope.id)

        return CallableSink(deliver, name=name)

    mine: list[str] = []
    async with SignalQueue(store=SQLiteOutboxStore(path), sinks=[sink("a"), sink("b")]) as q:
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PUBLISHER, str(path), "300"
        )
        # Publish until the other process is done, so the two overlap.
        while (len(mine) < 300 or other.returncode is None) and len(mine) < 50_000:
            envelope = Envelope(type="signal", key=f"m{len(mine)}", payload={})
            await q.publish(envelope)
            mine.append(envelope.id)
        assert await asyncio.wait_for(other.wait(), timeout(30)) == 0
        await q.wait_idle(timeout=timeout(10))
        pending, _ = await q.store.stats("a")
        assert pending == 0
    for name in ("a", "b"):
        assert len(got[name]) == len(mine) + 300, (name, len(got[name]), len(mine))
        assert len(set(got[name])) == len(got[name])
        assert set(mine) <= set(got[name])


async def test_wait_idle_waits_for_at_most_once_deliveries_in_flight() -> None:
    """An at-most-once entry is acked before delivery; wait_idle still waits for it."""
    started = asyncio.Event()
    release = asyncio.Event()
    got: list[str] = []

    async def slow(envelope: Envelope) -> None:
        started.set()
        await release.wait()
        got.append(envelope.id)

    async with SignalQueue(sinks=[CallableSink(slow, name="app", guarantee="at_most_once")]) as q:
        s = sig()
        await q.publish(s)
        await asyncio.wait_for(started.wait(), timeout(5))
        idle = asyncio.create_task(q.wait_idle(timeout=timeout(5)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not idle.done()
        release.set()
        await idle
    assert got == [s.id]


async def test_closing_the_queue_closes_a_webhook_sinks_session() -> None:
    """A WebhookSink built inline has its HTTP session closed with the queue."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    webhook = WebhookSink(f"http://127.0.0.1:{port}/", secret="whsec_" + "A" * 32, timeout=5)
    try:
        async with SignalQueue(sinks=[webhook]) as q:
            await q.publish(sig())
            await q.wait_idle(timeout=timeout(5))
            assert webhook._session is not None
            assert not webhook._session.closed
        assert webhook._session is None
    finally:
        await runner.cleanup()


async def test_a_stuck_key_does_not_stall_other_keys() -> None:
    """Entries parked behind a stuck symbol do not use up max_in_flight for other symbols."""
    release = asyncio.Event()
    got: list[str] = []
    fast_done = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        if envelope.payload["symbol"] == "SLOW":
            await release.wait()
        got.append(str(envelope.payload["symbol"]))
        if envelope.payload["symbol"] == "FAST":
            fast_done.set()

    sink = CallableSink(deliver, name="a")
    async with SignalQueue(sinks=[sink], max_in_flight=4, delivery_timeout=None) as q:
        for _ in range(5):
            await q.publish(Signal(symbol="SLOW", direction=Direction.BUY, volume=0.1))
        await q.publish(Signal(symbol="FAST", direction=Direction.BUY, volume=0.1))
        await asyncio.wait_for(fast_done.wait(), timeout(5))
        assert got == ["FAST"]
        release.set()
        await q.wait_idle(timeout=timeout(5))
    assert got == ["FAST"] + ["SLOW"] * 5


async def test_closing_gives_back_every_held_entry_in_per_key_order(
    store_factory: tuple[str, StoreFactory],
) -> None:
    """Entries in a runner's hands, parked behind a busy key, or not fetched yet all
    stay pending when the queue closes, so the next queue on the store delivers
    each once, in key order."""
    kind, factory = store_factory
    if kind == "redis":
        pytest.skip("a Redis consumer's released entries wait in its pending list for reclaim")
    store = factory()
    gate = asyncio.Event()  # never set: the first queue's deliveries hang
    hanging = 0
    all_hanging = asyncio.Event()

    async def hang(envelope: Envelope) -> None:
        nonlocal hanging
        hanging += 1
        if hanging == 3:  # A0, B3 and C5 in hand; A1, A2, A4 parked behind A0
            all_hanging.set()
        await gate.wait()

    first = SignalQueue(
        store=store, sinks=[CallableSink(hang, name="a")], max_in_flight=3, delivery_timeout=None
    )
    plan = [("A", 0), ("A", 1), ("A", 2), ("B", 3), ("A", 4), ("C", 5), ("C", 6)]
    async with first:
        for symbol, n in plan:
            payload = {"symbol": symbol, "n": n}
            await first.publish(Envelope(type="tick", key=f"e{n}", payload=payload))
        await asyncio.wait_for(all_hanging.wait(), timeout(5))
        assert (await first.metrics())["a"].in_flight == 6  # C6 not fetched: no room
    seen: dict[str, list[int]] = defaultdict(list)

    async def record(envelope: Envelope) -> None:
        seen[str(envelope.payload["symbol"])].append(int(envelope.payload["n"]))

    async with SignalQueue(store=factory(), sinks=[CallableSink(record, name="a")]) as second:
        await second.wait_idle(timeout=timeout(5))
    assert seen == {"A": [0, 1, 2, 4], "B": [3], "C": [5, 6]}


async def test_a_row_another_process_committed_first_is_handed_out_first(tmp_path: Path) -> None:
    """A row another store committed before this store's own append comes out first:
    the local hand-off stops at the gap in seqs and the database answers."""
    mine, theirs = SQLiteOutboxStore(tmp_path / "q.db"), SQLiteOutboxStore(tmp_path / "q.db")
    await mine.open(["s"])
    await theirs.open(["s"])
    try:
        assert await mine.fetch("s", limit=10) == []  # a complete scan: the tail is trusted
        opened = Envelope(type="signal", key="a", payload={"symbol": "EURUSD", "op": "open"})
        closed = Envelope(type="signal", key="b", payload={"symbol": "EURUSD", "op": "close"})
        assert await theirs.append(opened)
        assert await mine.append(closed)
        got = await mine.fetch("s", limit=10)
        assert [entry.envelope.id for entry in got] == [opened.id, closed.id]
    finally:
        await mine.close()
        await theirs.close()


async def test_a_queue_on_sqlite_is_woken_by_the_store_and_stops_listening_at_close(
    tmp_path: Path,
) -> None:
    """SignalQueue watches a WatchedOutboxStore's appends while it runs (its workers
    fetch as soon as rows are committed) and stops watching when it closes: a store
    object outlives the queue without keeping it alive."""
    store = SQLiteOutboxStore(tmp_path / "o.db")
    got: list[str] = []
    done = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        got.append(envelope.id)
        if len(got) == 3:
            done.set()

    queue = SignalQueue(store=store, sinks=[CallableSink(deliver, name="s")])
    async with queue:
        assert len(store._append_watchers) == 1
        for i in range(3):
            await queue.publish(Envelope(type="signal", key=f"wk{i}", payload={"i": i}))
        await asyncio.wait_for(done.wait(), timeout(10))
    assert store._append_watchers == []
