"""asyncpg next to psycopg 3 on the PostgreSQL backends' own statements, in one run.

Why this exists: the PostgreSQL backends had to pick one driver; this is the
measurement the choice rests on (docs/postgres.md quotes it). Both drivers run
the same SQL against the same private server, alternately, several rounds:

* ``claim``: one ``INSERT ... ON CONFLICT ... DO UPDATE ... RETURNING`` per call,
  awaited one after the other (the dedup claim: one round trip each; half the
  keys repeat);
* ``fetch_ack``: lease 100 rows with ``UPDATE ... WHERE seq IN (SELECT ... FOR
  UPDATE SKIP LOCKED LIMIT 100) RETURNING``, then delete them with one
  ``DELETE ... WHERE seq = ANY($1)`` (the outbox store's batched fetch and ack);
  figure: rows per second.

Each driver uses its own pool (asyncpg.Pool, psycopg_pool.AsyncConnectionPool)
with prepared statements as the driver does them by default. The server is a
private one on a free port (the test fixture's PostgresServer).

psycopg is not a dependency of the library: install ``'psycopg[binary]'
psycopg-pool`` for the comparison (without them only the asyncpg rows are printed).

Run: ``python benchmarks/bench_postgres_drivers.py [--quick] [--json]``
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import PrivatePostgres, Report, log, now, parse_args

CLAIM = """
INSERT INTO bench_claim (k, expires_at, token) VALUES ($1, $2, $3)
ON CONFLICT (k) DO UPDATE SET
    token = CASE WHEN bench_claim.expires_at <= $4 THEN excluded.token ELSE bench_claim.token END,
    expires_at = CASE WHEN bench_claim.expires_at <= $4
        THEN excluded.expires_at ELSE bench_claim.expires_at END
RETURNING expires_at, token
"""

LEASE = """
UPDATE bench_pending SET owner = $1 WHERE seq IN (
    SELECT seq FROM bench_pending WHERE owner IS NULL ORDER BY seq LIMIT 100
    FOR UPDATE SKIP LOCKED
) RETURNING seq, data
"""

ACK = "DELETE FROM bench_pending WHERE seq = ANY($1)"

SETUP = """
DROP TABLE IF EXISTS bench_claim;
DROP TABLE IF EXISTS bench_pending;
CREATE TABLE bench_claim (k text PRIMARY KEY, expires_at float8 NOT NULL, token text NOT NULL);
CREATE TABLE bench_pending (seq bigserial PRIMARY KEY, owner text, data text NOT NULL);
"""

FILL = "INSERT INTO bench_pending (data) SELECT repeat('x', 200) FROM generate_series(1, $1)"


def to_psycopg(sql: str) -> str:
    """asyncpg's $n placeholders as psycopg's %s (each used in order, $4 twice)."""
    out = sql
    for n in range(9, 0, -1):
        out = out.replace(f"${n}", f"%(p{n})s")
    return out


class AsyncpgRunner:
    name = "asyncpg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(SETUP)

    async def claim(self, keys: list[str]) -> float:
        started = now()
        async with self.pool.acquire() as conn:
            for i, key in enumerate(keys):
                await conn.fetchrow(CLAIM, key, 1e12, f"t{i}", 1.0)
        return now() - started

    async def fetch_ack(self, rows: int) -> float:
        async with self.pool.acquire() as conn:
            await conn.execute(FILL, rows)
        started = now()
        done = 0
        async with self.pool.acquire() as conn:
            while True:
                got = await conn.fetch(LEASE, "me")
                if not got:
                    break
                await conn.execute(ACK, [r[0] for r in got])
                done += len(got)
        assert done == rows
        return now() - started

    async def close(self) -> None:
        await self.pool.close()


class PsycopgRunner:
    name = "psycopg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            self.dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
        )
        await self.pool.open(wait=True)

    async def setup(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(SETUP)

    async def claim(self, keys: list[str]) -> float:
        sql = to_psycopg(CLAIM)
        started = now()
        async with self.pool.connection() as conn:
            for i, key in enumerate(keys):
                cur = await conn.execute(sql, {"p1": key, "p2": 1e12, "p3": f"t{i}", "p4": 1.0})
                await cur.fetchone()
        return now() - started

    async def fetch_ack(self, rows: int) -> float:
        async with self.pool.connection() as conn:
            await conn.execute(to_psycopg(FILL), {"p1": rows})
        lease, ack = to_psycopg(LEASE), to_psycopg(ACK)
        started = now()
        done = 0
        async with self.pool.connection() as conn:
            while True:
                cur = await conn.execute(lease, {"p1": "me"})
                got = await cur.fetchall()
                if not got:
                    break
                await conn.execute(ack, {"p1": [r[0] for r in got]})
                done += len(got)
        assert done == rows
        return now() - started

    async def close(self) -> None:
        await self.pool.close()


async def measure(dsn: str, quick: bool) -> dict[str, float]:
    rounds = 3 if quick else 5
    n_claims = 2_000 if quick else 10_000
    n_rows = 5_000 if quick else 20_000
    runners: list[Any] = []
    for runner, module in ((AsyncpgRunner, "asyncpg"), (PsycopgRunner, "psycopg_pool")):
        try:
            __import__(module)
        except ImportError:
            # psycopg is no dependency: pip install 'psycopg[binary]' psycopg-pool
            continue
        runners.append(runner(dsn))
    for r in runners:
        await r.open()
    claims: dict[str, list[float]] = {r.name: [] for r in runners}
    fetches: dict[str, list[float]] = {r.name: [] for r in runners}
    for round_no in range(rounds + 1):  # round 0 warms up
        for r in runners if round_no % 2 else list(reversed(runners)):
            await r.setup()
            keys = [f"k{i}" for i in range(n_claims // 2)] * 2
            elapsed: Callable[[], Awaitable[float]] = lambda r=r, keys=keys: r.claim(keys)  # noqa: E731
            c = await elapsed()
            f = await r.fetch_ack(n_rows)
            if round_no:
                claims[r.name].append(n_claims / c)
                fetches[r.name].append(n_rows / f)
    for r in runners:
        await r.close()
    out: dict[str, float] = {}
    for name in claims:
        out[f"{name}_claims_per_s"] = statistics.median(claims[name])
        out[f"{name}_fetch_ack_rows_per_s"] = statistics.median(fetches[name])
    return out


def main() -> None:
    args = parse_args(__doc__ or "")
    report = Report("postgres_drivers")
    try:
        server = PrivatePostgres()
    except RuntimeError as exc:
        report.notes.append(f"skipped: {exc}")
        report.emit(args.json)
        return
    try:
        log(args, f"private PostgreSQL at {server.dsn}")
        figures = asyncio.run(measure(server.dsn, args.quick))
    finally:
        server.stop()
    for key, value in figures.items():
        report.figure(key, value)
    if "psycopg_claims_per_s" not in figures or "asyncpg_claims_per_s" not in figures:
        report.notes.append("one driver is not installed: no comparison")
        report.emit(args.json)
        return
    report.figure(
        "claim_asyncpg_vs_psycopg",
        figures["asyncpg_claims_per_s"] / figures["psycopg_claims_per_s"],
    )
    report.figure(
        "fetch_ack_asyncpg_vs_psycopg",
        figures["asyncpg_fetch_ack_rows_per_s"] / figures["psycopg_fetch_ack_rows_per_s"],
    )
    report.emit(args.json)


if __name__ == "__main__":
    main()
