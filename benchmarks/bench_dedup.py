"""DedupCache throughput next to its anchors, measured side by side in one run.

Rows (operations per second; each stream claims every key twice, so half the
answers are FIRST and half DUPLICATE):

* ``dict_loop``: a plain ``dict`` of expiry times, check-and-set inline — the
  practical limit of an in-process dedup in Python;
* ``cachetools_ttlcache``: ``key in TTLCache`` then ``cache[key] = ...``;
* ``memory_backend_claim``: ``MemoryDedupBackend.claim_nowait`` (synchronous);
* ``memory_claim``: ``await DedupCache.claim`` on the memory backend (the public
  async API: validation, stats, one coroutine per claim);
* ``memory_claim_many``: ``await DedupCache.claim_many`` in batches of 1,000;
* ``redis_raw_set_nx_px`` / ``redis_raw_pipelined``: redis-py ``SET NX PX``, one at
  a time and pipelined by 1,000;
* ``redis_claim`` / ``redis_claim_many``: our Redis backend, the same two ways;
* ``sqlite_claim`` / ``sqlite_claim_many``: our SQLite backend (WAL, one file);
* ``postgres_raw_insert`` / ``postgres_raw_insert_batched``: asyncpg
  ``INSERT ... ON CONFLICT DO NOTHING``, one at a time and 1,000 rows a statement,
  into a table of the same shape as ours (same columns, primary key and expiry
  index: what a hand-written dedup with a TTL needs); ``postgres_raw_insert_bare``
  the same into a table of (type, key, expires_at) with only the primary key;
* ``postgres_claim`` / ``postgres_claim_many``: our PostgreSQL backend, the same
  two ways (the same driver, the same server, alternate rounds).

Redis runs on a private ``redis-server`` this script starts on a free port, and
PostgreSQL on a private cluster started the way the test fixture starts it
(``fsync=off``: the figures leave out the disk flush).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cachetools

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import PrivatePostgres, PrivateRedis, Report, log, now, parse_args
from fokha_integration.dedup import DedupCache, MemoryDedupBackend, SQLiteDedupBackend

TTL = 300.0


def stream(n: int, prefix: str = "EURUSD_BUY_") -> list[str]:
    """``n`` claims: n/2 distinct keys, each claimed twice (the second half repeats)."""
    keys = [f"{prefix}{i}" for i in range(n // 2)]
    return keys + keys


# -- in-process anchors and ours ----------------------------------------------


def run_dict_loop(keys: list[str]) -> float:
    seen: dict[str, float] = {}
    first = 0
    started = now()
    clock = time.monotonic()
    for key in keys:
        expires = seen.get(key)
        if expires is None or expires <= clock:
            seen[key] = clock + TTL
            first += 1
    elapsed = now() - started
    assert first == len(keys) // 2
    return elapsed


def run_ttlcache(keys: list[str]) -> float:
    cache: cachetools.TTLCache[str, bool] = cachetools.TTLCache(maxsize=10**7, ttl=TTL)
    first = 0
    started = now()
    for key in keys:
        if key not in cache:
            cache[key] = True
            first += 1
    elapsed = now() - started
    assert first == len(keys) // 2
    return elapsed


def run_backend_claim(keys: list[str]) -> float:
    claim = MemoryDedupBackend(max_entries=10**7).claim_nowait
    started = now()
    for key in keys:
        claim("signal", key, TTL, None, None)
    return now() - started


async def run_memory_claim(keys: list[str]) -> float:
    cache = DedupCache(MemoryDedupBackend(max_entries=10**7))
    started = now()
    for key in keys:
        await cache.claim(key)
    elapsed = now() - started
    assert cache.stats().first == len(keys) // 2
    return elapsed


async def run_memory_claim_many(keys: list[str]) -> float:
    cache = DedupCache(MemoryDedupBackend(max_entries=10**7))
    batches = [keys[i : i + 1000] for i in range(0, len(keys), 1000)]
    started = now()
    for batch in batches:
        await cache.claim_many(batch)
    elapsed = now() - started
    assert cache.stats().first == len(keys) // 2
    return elapsed


# -- Redis ---------------------------------------------------------------------


async def redis_rows(
    url: str, keys: list[str], batch_keys: list[str], rounds: int
) -> dict[str, float]:
    import redis.asyncio as aioredis

    from fokha_integration.dedup.redis import RedisDedupBackend

    raw = aioredis.Redis.from_url(url)
    cache = DedupCache(RedisDedupBackend(url, namespace="bench"))
    px = int(TTL * 1000)

    async def raw_single() -> float:
        await raw.flushall()
        started = now()
        for key in keys:
            await raw.set(key, b"1", nx=True, px=px)
        return now() - started

    async def raw_pipelined() -> float:
        await raw.flushall()
        started = now()
        for i in range(0, len(batch_keys), 1000):
            async with raw.pipeline(transaction=False) as pipe:
                for key in batch_keys[i : i + 1000]:
                    pipe.set(key, b"1", nx=True, px=px)
                await pipe.execute()
        return now() - started

    async def ours_single() -> float:
        await raw.flushall()
        started = now()
        for key in keys:
            await cache.claim(key)
        return now() - started

    async def ours_many() -> float:
        await raw.flushall()
        started = now()
        for i in range(0, len(batch_keys), 1000):
            await cache.claim_many(batch_keys[i : i + 1000])
        return now() - started

    rows: dict[str, list[float]] = {
        "redis_raw_set_nx_px": [],
        "redis_claim": [],
        "redis_raw_pipelined": [],
        "redis_claim_many": [],
    }
    runs: list[tuple[str, Callable[[], Awaitable[float]], int]] = [
        ("redis_raw_set_nx_px", raw_single, len(keys)),
        ("redis_claim", ours_single, len(keys)),
        ("redis_raw_pipelined", raw_pipelined, len(batch_keys)),
        ("redis_claim_many", ours_many, len(batch_keys)),
    ]
    try:
        await ours_single()  # warm up connections
        # Many short interleaved rounds: the server shares the CPUs with this process,
        # so a median over rounds is steadier than one long run.
        for _ in range(rounds):
            for name, run, count in runs:
                rows[name].append(count / await run())
    finally:
        await cache.close()
        await raw.aclose()
    out = {name: statistics.median(values) for name, values in rows.items()}
    for ours, anchor in (
        ("redis_claim", "redis_raw_set_nx_px"),
        ("redis_claim_many", "redis_raw_pipelined"),
    ):
        out[f"{ours}_paired_ratio"] = statistics.median(
            o / a for o, a in zip(rows[ours], rows[anchor], strict=True)
        )
    return out


# -- PostgreSQL ----------------------------------------------------------------


async def postgres_rows(
    dsn: str, keys: list[str], batch_keys: list[str], rounds: int
) -> dict[str, float]:
    """Our claim next to a raw ``INSERT ... ON CONFLICT DO NOTHING`` (asyncpg, one
    connection), alternately, ``rounds`` times; tables emptied before each run."""
    import asyncpg

    from fokha_integration.dedup.postgres import PostgresDedupBackend

    raw = await asyncpg.connect(dsn)
    cache = DedupCache(PostgresDedupBackend(dsn, sweep_interval=None))
    await cache.seen("warm-up")  # creates the pool and the tables
    await raw.execute("CREATE TABLE IF NOT EXISTS raw_dedup (LIKE fokha_dedup INCLUDING ALL)")
    await raw.execute(
        "CREATE TABLE IF NOT EXISTS raw_bare"
        " (type text, key text, expires_at float8, PRIMARY KEY (type, key))"
    )

    async def empty() -> None:
        await raw.execute("TRUNCATE raw_dedup, raw_bare, fokha_dedup")

    columns = "(type, key, first_seen, expires_at, state, token)"
    insert = f"INSERT INTO raw_dedup {columns} VALUES ('signal', $1, $2, $2, 0, $3)"
    insert_many = (
        f"INSERT INTO raw_dedup {columns} SELECT 'signal', k, $2, $2, 0, $3"
        " FROM unnest($1::text[]) AS k"
    )
    insert_bare = "INSERT INTO raw_bare VALUES ('signal', $1, $2)"
    skip = " ON CONFLICT DO NOTHING"

    async def raw_single() -> float:
        await empty()
        started = now()
        for key in keys:
            await raw.execute(insert + skip, key, 1e12, "t")
        return now() - started

    async def raw_bare() -> float:
        await empty()
        started = now()
        for key in keys:
            await raw.execute(insert_bare + skip, key, 1e12)
        return now() - started

    async def raw_batched() -> float:
        await empty()
        started = now()
        for i in range(0, len(batch_keys), 1000):
            await raw.execute(insert_many + skip, batch_keys[i : i + 1000], 1e12, "t")
        return now() - started

    async def ours_single() -> float:
        await empty()
        started = now()
        for key in keys:
            await cache.claim(key)
        return now() - started

    async def ours_many() -> float:
        await empty()
        started = now()
        for i in range(0, len(batch_keys), 1000):
            await cache.claim_many(batch_keys[i : i + 1000])
        return now() - started

    runs: list[tuple[str, Callable[[], Awaitable[float]], int]] = [
        ("postgres_raw_insert", raw_single, len(keys)),
        ("postgres_claim", ours_single, len(keys)),
        ("postgres_raw_insert_bare", raw_bare, len(keys)),
        ("postgres_raw_insert_batched", raw_batched, len(batch_keys)),
        ("postgres_claim_many", ours_many, len(batch_keys)),
    ]
    rows: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    try:
        await ours_single()  # warm up: prepared statements, pool
        await raw_single()
        for _ in range(rounds):
            for name, run, count in runs:
                rows[name].append(count / await run())
    finally:
        await cache.aclose()
        await raw.close()
    out = {name: statistics.median(values) for name, values in rows.items()}
    for ours, anchor in (
        ("postgres_claim", "postgres_raw_insert"),
        ("postgres_claim_many", "postgres_raw_insert_batched"),
    ):
        out[f"{ours}_paired_ratio"] = statistics.median(
            o / a for o, a in zip(rows[ours], rows[anchor], strict=True)
        )
    return out


async def sqlite_rows(workdir: str, single: list[str], batch_keys: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    async with DedupCache(SQLiteDedupBackend(Path(workdir) / "single.db")) as cache:
        started = now()
        for key in single:
            await cache.claim(key)
        out["sqlite_claim"] = len(single) / (now() - started)
    async with DedupCache(SQLiteDedupBackend(Path(workdir) / "batch.db")) as cache:
        started = now()
        for i in range(0, len(batch_keys), 1000):
            await cache.claim_many(batch_keys[i : i + 1000])
        out["sqlite_claim_many"] = len(batch_keys) / (now() - started)
    return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    quick = args.quick
    report = Report("bench_dedup")
    n_memory = 20_000 if quick else 200_000
    rounds = 5 if quick else 9
    memory_rounds = 15 if quick else 25
    keys = stream(n_memory)

    log(args, f"in-process rows: {n_memory} claims x {memory_rounds} rounds (interleaved)")
    samples: dict[str, list[float]] = {
        "dict_loop": [],
        "cachetools_ttlcache": [],
        "memory_backend_claim": [],
        "memory_claim": [],
        "memory_claim_many": [],
    }
    for _ in range(memory_rounds):
        samples["dict_loop"].append(len(keys) / run_dict_loop(keys))
        samples["cachetools_ttlcache"].append(len(keys) / run_ttlcache(keys))
        samples["memory_backend_claim"].append(len(keys) / run_backend_claim(keys))
        samples["memory_claim"].append(len(keys) / asyncio.run(run_memory_claim(keys)))
        samples["memory_claim_many"].append(len(keys) / asyncio.run(run_memory_claim_many(keys)))
    # Figures: the best round of each (the one least disturbed by other work on the
    # machine, the timeit convention). Ratios: the median of per-round ratios — each
    # round measures ours and the anchor back to back, so slow drifts in the load of
    # a shared machine cancel out.
    ops = {name: max(values) for name, values in samples.items()}

    def paired(ours: str, anchor: str) -> float:
        return statistics.median(o / a for o, a in zip(samples[ours], samples[anchor], strict=True))

    for name, value in ops.items():
        report.figure(f"{name}_ops_per_s", value)

    with tempfile.TemporaryDirectory(prefix="fokha-bench-dedup-") as workdir:
        redis_single = stream(1_000 if quick else 5_000, "r_")
        redis_batch = stream(10_000 if quick else 100_000, "rb_")
        server = None
        try:
            server = PrivateRedis(workdir)
            log(args, f"redis rows on a private redis-server at {server.url}")
            rops = asyncio.run(redis_rows(server.url, redis_single, redis_batch, rounds))
        except (RuntimeError, ImportError) as exc:
            log(args, f"redis rows skipped: {exc}")
            report.notes.append(f"redis rows skipped: {exc}")
            rops = {}
        finally:
            if server is not None:
                server.stop()
        for name, value in rops.items():
            if not name.endswith("_paired_ratio"):
                report.figure(f"{name}_ops_per_s", value)

        log(args, "sqlite rows")
        sops = asyncio.run(
            sqlite_rows(workdir, stream(2_000 if quick else 10_000, "s_"), stream(20_000, "sb_"))
        )
        for name, value in sops.items():
            report.figure(f"{name}_ops_per_s", value)

        pops = postgres_section(args, report, quick, rounds)

    ratio = report.figure
    many_vs_dict = ratio("memory_claim_many_vs_dict_loop", paired("memory_claim_many", "dict_loop"))
    claim_vs_ttl = ratio("memory_claim_vs_ttlcache", paired("memory_claim", "cachetools_ttlcache"))
    backend_vs_ttl = ratio(
        "memory_backend_claim_vs_ttlcache", paired("memory_backend_claim", "cachetools_ttlcache")
    )
    report.target("memory claim_many vs plain dict loop", many_vs_dict, 0.5, ">=", "x")
    # `await DedupCache.claim` vs TTLCache (was >= 2x) is a figure only: that target was
    # retired in issue 12 (the async API's cost is judged with real I/O, not in memory).
    del claim_vs_ttl
    report.target("memory backend claim (sync) vs TTLCache", backend_vs_ttl, 2.0, ">=", "x")
    if rops:
        single = ratio("redis_claim_vs_raw", rops["redis_claim_paired_ratio"])
        piped = ratio("redis_claim_many_vs_raw_pipelined", rops["redis_claim_many_paired_ratio"])
        report.target("redis claim vs raw SET NX PX", single, 0.8, ">=", "x")
        report.target("redis claim_many vs raw pipelined SET NX PX", piped, 0.8, ">=", "x")
    if pops:
        single = ratio("postgres_claim_vs_raw", pops["postgres_claim_paired_ratio"])
        batched = ratio(
            "postgres_claim_many_vs_raw_batched", pops["postgres_claim_many_paired_ratio"]
        )
        report.target("postgres claim vs raw INSERT ON CONFLICT DO NOTHING", single, 0.8, ">=", "x")
        report.target("postgres claim_many vs raw batched INSERT", batched, 0.8, ">=", "x")
    report.emit(args.json)


def postgres_section(args: Any, report: Report, quick: bool, rounds: int) -> dict[str, float]:
    """The PostgreSQL rows on a private server (skipped with a note when unavailable)."""
    try:
        server = PrivatePostgres()
    except RuntimeError as exc:
        log(args, f"postgres rows skipped: {exc}")
        report.notes.append(f"postgres rows skipped: {exc}")
        return {}
    try:
        log(args, "postgres rows on a private PostgreSQL server")
        pops = asyncio.run(
            postgres_rows(
                server.dsn,
                stream(1_000 if quick else 5_000, "p_"),
                stream(10_000 if quick else 100_000, "pb_"),
                rounds,
            )
        )
    except ImportError as exc:
        report.notes.append(f"postgres rows skipped: {exc}")
        return {}
    finally:
        server.stop()
    for name, value in pops.items():
        if not name.endswith("_paired_ratio"):
            report.figure(f"{name}_ops_per_s", value)
    return pops


if __name__ == "__main__":
    main()
