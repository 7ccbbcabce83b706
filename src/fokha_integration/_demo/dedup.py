"""Demo section: duplicates visibly rejected — across a producer restart, windows, leases."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..dedup import (
    ClaimStatus,
    DedupCache,
    SQLiteDedupBackend,
    content_key,
    signal_key,
)
from ..models import Direction, Signal

if TYPE_CHECKING:
    from . import DemoContext


async def run(ctx: DemoContext) -> None:
    """Show a restarted producer's re-emitted signals rejected, windows, and a lease."""
    minute = datetime(2026, 11, 23, 12, 0, 30, tzinfo=timezone.utc)
    signals = [
        Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1, created_at=minute),
        Signal(symbol="GBPUSD", direction=Direction.SELL, volume=0.2, created_at=minute),
        Signal(symbol="XAUUSD", direction=Direction.BUY, volume=0.01, created_at=minute),
    ]
    executed: list[str] = []

    with tempfile.TemporaryDirectory(prefix="fokha-demo-dedup-") as folder:
        path = Path(folder) / "dedup.sqlite3"
        ctx.say(f"dedup store: SQLite (WAL) at {path.name}; signal TTL 300 s")

        async def produce(batch: list[Signal], who: str) -> tuple[int, int]:
            # A fresh backend on the same file stands for a fresh producer process.
            async with DedupCache(SQLiteDedupBackend(path)) as cache:
                sent = rejected = 0
                for sig in batch:
                    key = signal_key(sig.symbol, sig.direction, sig.created_at)
                    answer = await cache.claim(key)
                    if answer.status is ClaimStatus.FIRST:
                        executed.append(key)
                        sent += 1
                        ctx.say(f"{who}: {key} -> FIRST, sent to the EA")
                    else:
                        rejected += 1
                        ctx.say(f"{who}: {key} -> {answer.status.name}, rejected (no 2nd trade)")
                return sent, rejected

        sent, rejected = await produce(signals, "producer")
        assert (sent, rejected) == (3, 0)
        ctx.say("producer crashes and restarts, re-emitting the last minute's signals + 1 new")
        late = Signal(symbol="USDJPY", direction=Direction.BUY, volume=0.1, created_at=minute)
        sent, rejected = await produce([*signals, late], "restarted")
        assert (sent, rejected) == (1, 3), "the re-emitted signals must be rejected"
        assert len(executed) == len(set(executed)) == 4

    before = datetime(2026, 11, 23, 12, 0, 59, tzinfo=timezone.utc)
    after = datetime(2026, 11, 23, 12, 1, 0, tzinfo=timezone.utc)
    cache = DedupCache()
    tumbling = [
        (await cache.claim(signal_key("EURUSD", "BUY", ts), type="demo-t")).status
        for ts in (before, after)
    ]
    sliding_key = signal_key("EURUSD", "BUY", before, 60, mode="sliding")
    sliding = [(await cache.claim(sliding_key, type="demo-s", ttl=60)).status for _ in range(2)]
    ctx.say(
        "12:00:59 then 12:01:00 -> tumbling: "
        f"{tumbling[0].name}, {tumbling[1].name} (two buckets); "
        f"sliding(60 s): {sliding[0].name}, {sliding[1].name}"
    )
    assert tumbling == [ClaimStatus.FIRST, ClaimStatus.FIRST]
    assert sliding == [ClaimStatus.FIRST, ClaimStatus.DUPLICATE]

    order = {"symbol": "EURUSD", "side": "BUY", "volume": 0.1}
    fingerprint = content_key(order)
    worker_a = await cache.claim("order-7", type="webhook", lease=5, fingerprint=fingerprint)
    worker_b = await cache.claim("order-7", type="webhook", lease=5, fingerprint=fingerprint)
    ctx.say(
        f"idempotency key order-7: worker A {worker_a.status.name} (lease 5 s), "
        f"worker B {worker_b.status.name}"
    )
    await cache.commit("order-7", b'{"ticket": 4711}', type="webhook", token=worker_a.token)
    retry = await cache.claim("order-7", type="webhook", fingerprint=fingerprint)
    assert retry.result is not None
    ctx.say(
        f"A committed; a client retry gets {retry.status.name} and replays {retry.result.decode()}"
    )
    reused = await cache.claim("order-7", type="webhook", fingerprint=content_key({"x": 1}))
    ctx.say(f"the same key with other content -> {reused.status.name}")
    assert worker_a.status is ClaimStatus.FIRST
    assert worker_b.status is ClaimStatus.IN_FLIGHT
    assert retry.status is ClaimStatus.DUPLICATE
    assert reused.status is ClaimStatus.CONFLICT
    stats = cache.stats()
    ctx.say(
        f"stats: first={stats.first} duplicates={stats.duplicates} "
        f"conflicts={stats.conflicts} in_flight={stats.in_flight}"
    )
