"""SignalQueue: publish-to-delivered throughput and latency, per store, next to a baseline.

The target (issue 12): with real sinks on loopback (a WebSocketServer with 10
clients, a FileBridge to the EA emulator, a signed webhook to a local aiohttp
receiver; see ``_real_sinks.py``) the queue on the SQLite store reaches at least
0.8x the throughput of a baseline that claims the dedup key and calls the same
three sinks directly and concurrently (same in-flight limit per sink), and its p99
publish-to-delivered is at most 1.25x the baseline's at the same offered load. The
memory store's figures stand beside it. The in-process rows below (CallableSinks
that do nothing) show the queue's own overhead; their 0.5x target is retired.

Baseline ("direct"): for each envelope, a dedup claim (key and content fingerprint,
as the queue makes it) and three direct awaits of the
same three in-process sinks; no outbox, no retry, no breaker. Ours: ``publish()``
into the queue with each store (memory, SQLite, Redis Streams on a private
redis-server when the binary is present, PostgreSQL on a private cluster when
its binaries and the ``[postgres]`` extra are present), three in-process at-least-once sinks,
measured until every sink has every envelope. Publishers run concurrently (64
tasks), as a producer with several strategies would. Both paths are warmed up, then
run alternately (five rounds with ``--quick``, seven without); the median
throughputs are reported, and the median of the per-round ratios. The Redis row has its own
anchor: the same streams work written directly on redis-py (``redis_vs_raw``).
Then a paced run at 1,000 signals/s on the memory store gives the
publish-to-deliver p99. A "bare fan-out"
row (claim, then three deques drained by three tasks, no other feature) shows the
floor any asyncio outbox pays, for scale.

Run: ``python benchmarks/bench_queue.py [--quick] [--json]``
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections import deque
from pathlib import Path

import _real_sinks
from _harness import PrivatePostgres, PrivateRedis, Report, log, parse_args, percentile
from fokha_integration.models import Envelope, canonical_json
from fokha_integration.queue import (
    CallableSink,
    MemoryOutboxStore,
    OutboxStore,
    SignalQueue,
    SQLiteOutboxStore,
    memory_deduper,
)

SINKS = ("ws", "bridge", "webhook")
PUBLISHERS = 64


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope(type="signal", key=f"k{i}", payload={"symbol": f"S{i % 50}", "n": i})
        for i in range(n)
    ]


class Tally:
    """Counts deliveries and records publish-to-deliver latency."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def sink(self, name: str) -> CallableSink:
        async def deliver(envelope: Envelope) -> None:
            self.latencies.append(time.perf_counter() - self.sent[envelope.id])
            self.count += 1
            if self.count >= self.expected:
                self.done.set()

        return CallableSink(deliver, name=name)


async def baseline(n: int) -> tuple[float, float]:
    envs = envelopes(n)
    tally = Tally(3 * n)
    sinks = [tally.sink(s) for s in SINKS]
    dedup = memory_deduper()

    async def one(e: Envelope) -> None:
        tally.sent[e.id] = time.perf_counter()
        # The same claim the queue makes: key plus a content fingerprint.
        fingerprint = hashlib.sha256(canonical_json(e.payload).encode()).hexdigest()
        claim = await dedup.claim(e.key, type=e.type, fingerprint=fingerprint)
        if claim.status == "first":
            for s in sinks:
                await s.deliver(e)

    start = time.perf_counter()
    await run_publishers(envs, one)
    elapsed = time.perf_counter() - start
    return n / elapsed, percentile(tally.latencies, 99)


async def bare_fanout(n: int) -> float:
    """The floor any outbox pays: claim, then three deques drained by three tasks.

    No store, retry, breaker, timeout, ordering or metrics: what is left of the queue
    when every feature is taken away. For scale only.
    """
    envs = envelopes(n)
    tally = Tally(3 * n)
    sinks = [tally.sink(s) for s in SINKS]
    dedup = memory_deduper()
    queues: list[deque[Envelope]] = [deque() for _ in sinks]
    wakes = [asyncio.Event() for _ in sinks]

    async def drain(i: int) -> None:
        q, wake, sink = queues[i], wakes[i], sinks[i]
        while True:
            while q:
                await sink.deliver(q.popleft())
            wake.clear()
            await wake.wait()

    workers = [asyncio.create_task(drain(i)) for i in range(len(sinks))]

    async def one(e: Envelope) -> None:
        tally.sent[e.id] = time.perf_counter()
        fingerprint = hashlib.sha256(canonical_json(e.payload).encode()).hexdigest()
        claim = await dedup.claim(e.key, type=e.type, fingerprint=fingerprint)
        if claim.status == "first":
            for q, wake in zip(queues, wakes, strict=True):
                q.append(e)
                wake.set()

    start = time.perf_counter()
    await run_publishers(envs, one)
    await asyncio.wait_for(tally.done.wait(), 60)
    elapsed = time.perf_counter() - start
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return n / elapsed


async def raw_redis_streams(n: int, url: str) -> float:
    """The anchor for the Redis row: the same work written directly on redis-py.

    Per envelope one pipelined XADD into each sink's stream; per sink one consumer
    that reads up to 256 entries with XREADGROUP, parses and delivers each, then
    acknowledges the batch with one XACK + XDEL. No dedup, lease refresh, reclaim,
    retry or breaker.
    """
    import redis.asyncio as aioredis

    envs = envelopes(n)
    tally = Tally(3 * n)
    sinks = [tally.sink(s) for s in SINKS]
    client = aioredis.Redis.from_url(url)
    streams = {s.name: f"raw:{s.name}" for s in sinks}
    for sink in sinks:
        await client.xgroup_create(streams[sink.name], sink.name, id="0", mkstream=True)

    stop = asyncio.Event()

    async def consume(sink: CallableSink) -> None:
        stream = streams[sink.name]
        while not stop.is_set():
            resp = await client.xreadgroup(sink.name, "c", {stream: ">"}, count=256, block=100)
            ids = []
            for _, items in resp or ():
                for ident, fields in items:
                    await sink.deliver(Envelope.from_json(fields[b"d"]))
                    ids.append(ident)
            if ids:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.xack(stream, sink.name, *ids)
                    pipe.xdel(stream, *ids)
                    await pipe.execute()

    consumers = [asyncio.create_task(consume(s)) for s in sinks]

    async def one(e: Envelope) -> None:
        tally.sent[e.id] = time.perf_counter()
        data = e.to_json()
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams.values():
                pipe.xadd(stream, {"d": data})
            await pipe.execute()

    start = time.perf_counter()
    await run_publishers(envs, one)
    await asyncio.wait_for(tally.done.wait(), 120)
    elapsed = time.perf_counter() - start
    # A flag, not cancel(): redis-py does not recover a connection cancelled inside a
    # blocking XREADGROUP; each consumer sees the flag within its 100 ms block.
    stop.set()
    await asyncio.wait_for(asyncio.gather(*consumers), 10)
    await client.aclose()
    return n / elapsed


async def run_publishers(envs: list[Envelope], fn: object) -> None:
    it = iter(envs)

    async def publisher() -> None:
        for e in it:
            await fn(e)  # type: ignore[operator]

    await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))


async def through_queue(n: int, store: OutboxStore) -> tuple[float, float]:
    envs = envelopes(n)
    tally = Tally(3 * n)
    q = SignalQueue(store=store, sinks=[tally.sink(s) for s in SINKS], max_in_flight=256)
    async with q:

        async def one(e: Envelope) -> None:
            tally.sent[e.id] = time.perf_counter()
            await q.publish(e)

        start = time.perf_counter()
        await run_publishers(envs, one)
        await asyncio.wait_for(tally.done.wait(), 120)
        elapsed = time.perf_counter() - start
    return n / elapsed, percentile(tally.latencies, 99)


async def paced(rate: float, seconds: float) -> tuple[float, float]:
    n = int(rate * seconds)
    envs = envelopes(n)
    tally = Tally(3 * n)
    q = SignalQueue(sinks=[tally.sink(s) for s in SINKS])
    async with q:
        start = time.perf_counter()
        for i, e in enumerate(envs):
            due = start + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tally.sent[e.id] = time.perf_counter()
            await q.publish(e)
        await asyncio.wait_for(tally.done.wait(), 60)
    return percentile(tally.latencies, 99), percentile(tally.latencies, 50)


async def main() -> None:
    args = parse_args(__doc__ or "")
    logging.disable(logging.CRITICAL)
    n = 10_000 if args.quick else 30_000
    report = Report("bench_queue")

    # Warm both paths up first, then alternate them and take medians: the first run
    # in a process pays for allocator growth, which would flatter whichever runs second.
    await baseline(2_000)
    await through_queue(2_000, MemoryOutboxStore())
    # Rounds are cheap (a second or two each) and the host is noisy: the median of
    # more pairs is steadier.
    rounds = 5 if args.quick else 7
    base_runs: list[tuple[float, float]] = []
    mem_runs: list[tuple[float, float]] = []
    for r in range(rounds):
        log(
            args, f"round {r + 1}/{rounds}: baseline (dedup claim + 3 direct awaits), {n} envelopes"
        )
        base_runs.append(await baseline(n))
        log(args, f"round {r + 1}/{rounds}: memory store")
        mem_runs.append(await through_queue(n, MemoryOutboxStore()))
    floor_tput = sorted([await bare_fanout(n) for _ in range(rounds)])[rounds // 2]
    base_tput, base_p99 = sorted(base_runs)[rounds // 2]
    mem_tput, mem_p99 = sorted(mem_runs)[rounds // 2]
    report.figure("baseline_signals_per_s", base_tput)
    report.figure("memory_signals_per_s", mem_tput)
    report.figure("bare_fanout_signals_per_s", floor_tput)
    report.figure("bare_fanout_vs_baseline", floor_tput / base_tput)
    # The ratio is taken per round (the two runs of a round are seconds apart, so a
    # slow spell of the host hits both) and the median of those is reported.
    ratios = sorted(m[0] / b[0] for m, b in zip(mem_runs, base_runs, strict=True))
    mem_ratio = ratios[rounds // 2]
    report.notes.append(
        "memory/baseline per round: " + ", ".join(f"{x:.3f}" for x in ratios) + " (median used)"
    )
    report.figure("memory_p99_ms_saturated", mem_p99 * 1000)
    report.figure("memory_vs_baseline", mem_ratio)

    with tempfile.TemporaryDirectory() as tmp:
        log(args, "sqlite store")
        sq_tput, sq_p99 = await through_queue(n, SQLiteOutboxStore(Path(tmp) / "o.db"))
        report.figure("sqlite_signals_per_s", sq_tput)
        report.figure("sqlite_p99_ms_saturated", sq_p99 * 1000)
        log(args, "sqlite store, synchronous=FULL")
        full_tput, _ = await through_queue(
            n, SQLiteOutboxStore(Path(tmp) / "f.db", synchronous="FULL")
        )
        report.figure("sqlite_full_signals_per_s", full_tput)

        try:
            redis = PrivateRedis(tmp)
        except RuntimeError as exc:
            report.notes.append(f"Redis Streams row skipped: {exc}")
        else:
            from fokha_integration.queue.redis import RedisStreamsStore

            with redis:
                log(args, "redis streams store")
                rn = n // 2
                r_tput, r_p99 = await through_queue(rn, RedisStreamsStore(redis.url))
                report.figure("redis_signals_per_s", r_tput)
                report.figure("redis_p99_ms_saturated", r_p99 * 1000)
                log(args, "raw redis-py streams (anchor for the Redis row)")
                raw = await raw_redis_streams(rn, redis.url)
                report.figure("redis_raw_signals_per_s", raw)
                report.figure("redis_vs_raw", r_tput / raw)

    await postgres_rows(args, report, n // 2)

    seconds = 3.0 if args.quick else 10.0
    log(args, f"paced: 1,000 signals/s for {seconds:g}s on the memory store")
    p99, p50 = await paced(1000.0, seconds)
    report.figure("memory_p50_ms_at_1000_per_s", p50 * 1000)
    report.figure("memory_p99_ms_at_1000_per_s", p99 * 1000)

    try:
        await real_sink_rows(args, report)
    except Exception as exc:  # report the rest, and say why this part is missing
        report.notes.append(f"real-sink rows failed: {exc!r}"[:2000])
    report.target("sqlite throughput", sq_tput, 5000.0, ">=", "signals/s")
    report.target("memory p99 at 1,000/s", p99 * 1000, 10.0, "<=", "ms")
    report.notes.append(f"baseline p99 (saturated) {base_p99 * 1000:.2f} ms")
    report.emit(args.json)


# -- PostgreSQL (issue 18) -----------------------------------------------------


async def postgres_rows(args: object, report: Report, n: int) -> None:
    """The PostgreSQL outbox row: the same three sinks and 64 publishers, on a private
    server started the way the test fixture starts it (``fsync=off``)."""
    try:
        server = PrivatePostgres()
    except RuntimeError as exc:
        report.notes.append(f"PostgreSQL row skipped: {exc}")
        return
    try:
        from fokha_integration.queue.postgres import PostgresOutboxStore
    except ImportError as exc:
        server.stop()
        report.notes.append(f"PostgreSQL row skipped: {exc}")
        return
    try:
        log(args, "postgres outbox store")  # type: ignore[arg-type]
        tput, p99 = await through_queue(n, PostgresOutboxStore(server.dsn))
    finally:
        server.stop()
    report.figure("postgres_signals_per_s", tput)
    report.figure("postgres_p99_ms_saturated", p99 * 1000)
    report.target("postgres outbox throughput (3 sinks)", tput, 2000.0, ">=", "signals/s")


async def real_sink_rows(args: object, report: Report) -> None:
    """The real-sink target: SQLite queue vs direct calls, memory store beside it."""
    quick = bool(getattr(args, "quick", False))
    n = 400 if quick else 1500
    # Five rounds even in --quick: one round's p99 on a shared 2-core host swings
    # several-fold, and a median of three is one bad round from a wrong verdict.
    rounds = 5 if quick else 7
    base: list[float] = []
    sqlite: list[float] = []
    memory: list[float] = []
    async with _real_sinks.real_sinks() as real:
        await _real_sinks.baseline(real, 100, "warm")  # connections, folders, caches

        async def saturated_baseline(r: int) -> float:
            return (await _real_sinks.baseline(real, n, f"b{r}"))[0]

        async def saturated_sqlite(r: int) -> float:
            with tempfile.TemporaryDirectory() as tmp:
                store = SQLiteOutboxStore(Path(tmp) / "o.db")
                return (await _real_sinks.through_queue(real, n, f"s{r}", store))[0]

        async def saturated_memory(r: int) -> float:
            return (await _real_sinks.through_queue(real, n, f"m{r}", MemoryOutboxStore()))[0]

        saturated = [(base, saturated_baseline), (sqlite, saturated_sqlite)]
        saturated.append((memory, saturated_memory))
        for r in range(rounds):
            log(args, f"real sinks, round {r + 1}/{rounds}: baseline, SQLite queue, memory queue")
            for rates, measure in saturated[r % 3 :] + saturated[: r % 3]:  # the order turns
                rates.append(await measure(r))
        mid = rounds // 2
        sq_ratio = sorted(q / b for q, b in zip(sqlite, base, strict=True))[mid]
        mem_ratio = sorted(q / b for q, b in zip(memory, base, strict=True))[mid]
        report.figure("real_baseline_signals_per_s", sorted(base)[mid])
        report.figure("real_sqlite_signals_per_s", sorted(sqlite)[mid])
        report.figure("real_memory_signals_per_s", sorted(memory)[mid])
        report.figure("real_sqlite_vs_baseline", sq_ratio)
        report.figure("real_memory_vs_baseline", mem_ratio)
        # Latency at the same offered load for all. The target is read at a quarter of
        # the baseline's saturated rate: at half of it both sides sit on the knee of the
        # latency curve (the EA emulator is near its capacity) and p99 over a few seconds
        # swings several-fold between identical runs; that point is reported beside it.
        quarter = sorted(base)[mid] / 4
        paced_n = max(100, int(quarter * (6 if quick else 15)))
        # p99 over a few seconds is noisy: rounds interleave the three sides, and the
        # target reads the median of the per-round ratios (as for throughput).
        b_p99: list[float] = []
        s_p99: list[float] = []
        m_p99: list[float] = []

        async def paced_baseline(r: int) -> list[float]:
            return (await _real_sinks.baseline(real, paced_n, f"pb{r}", quarter))[1]

        async def paced_sqlite(r: int) -> list[float]:
            with tempfile.TemporaryDirectory() as tmp:
                store = SQLiteOutboxStore(Path(tmp) / "o.db")
                return (await _real_sinks.through_queue(real, paced_n, f"ps{r}", store, quarter))[1]

        async def paced_memory(r: int) -> list[float]:
            store = MemoryOutboxStore()
            return (await _real_sinks.through_queue(real, paced_n, f"pm{r}", store, quarter))[1]

        sides = [(b_p99, paced_baseline), (s_p99, paced_sqlite), (m_p99, paced_memory)]
        for r in range(rounds):
            log(args, f"real sinks, paced at {quarter:.0f} signals/s, round {r + 1}/{rounds}")
            # The order turns each round, so a side is not always the one after another.
            for p99s, paced in sides[r % 3 :] + sides[: r % 3]:
                p99s.append(percentile(await paced(r), 99) * 1000)
        half = 2 * quarter
        half_n = max(100, int(half * 4))
        log(args, f"real sinks, paced at {half:.0f} signals/s (reported): {half_n} signals each")
        _, hb_lat = await _real_sinks.baseline(real, half_n, "hb", half)
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteOutboxStore(Path(tmp) / "o.db")
            _, hs_lat = await _real_sinks.through_queue(real, half_n, "hs", store, half)
    mid = rounds // 2
    b99, s99, m99 = (sorted(x)[mid] for x in (b_p99, s_p99, m_p99))
    s_ratio = sorted(q / b for q, b in zip(s_p99, b_p99, strict=True))[mid]
    m_ratio = sorted(q / b for q, b in zip(m_p99, b_p99, strict=True))[mid]
    hb99, hs99 = (percentile(x, 99) * 1000 for x in (hb_lat, hs_lat))
    report.figure("real_paced_signals_per_s", quarter)
    report.figure("real_baseline_p99_ms", b99)
    report.figure("real_sqlite_p99_ms", s99)
    report.figure("real_memory_p99_ms", m99)
    report.figure("real_sqlite_p99_vs_baseline", s_ratio)
    report.figure("real_memory_p99_vs_baseline", m_ratio)
    report.figure("real_half_rate_baseline_p99_ms", hb99)
    report.figure("real_half_rate_sqlite_p99_ms", hs99)
    report.figure("real_half_rate_sqlite_p99_vs_baseline", hs99 / hb99)
    report.notes.append(
        "real sinks: p99 SQLite/baseline per paced round: "
        + ", ".join(f"{q / b:.2f}" for q, b in zip(s_p99, b_p99, strict=True))
    )
    report.notes.append(
        "real sinks: SQLite/baseline per round: "
        + ", ".join(f"{q / b:.2f}" for q, b in zip(sqlite, base, strict=True))
    )
    report.target("real sinks: SQLite queue throughput vs direct", sq_ratio, 0.8, ">=", "x")
    report.target(
        "real sinks: SQLite queue p99 vs direct (a quarter of saturation)",
        s_ratio,
        1.25,
        "<=",
        "x",
    )


if __name__ == "__main__":
    asyncio.run(main())
