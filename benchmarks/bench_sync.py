"""SyncService: initial/incremental sync over loopback HTTP and push throughput, beside a floor.

The floor (measured in the same run) copies the same rows SQLite -> SQLite in one
process, with one JSON decode + encode per row and one checkpoint write per batch
of 1,000 — the least any sync over SQLite could do. Ours: a server (SQLiteSyncStore
behind sync_app on 127.0.0.1) and a SyncClient with its SQLite replica, batches of
1,000. PostgreSQL figures (PostgresSyncStore on a private server) beside them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from _harness import Report, log, now, parse_args
from fokha_integration.sync import Record, SyncService, SyncStore
from fokha_integration.sync._app import sync_app
from fokha_integration.sync._client import SyncClient, SyncClientConfig
from fokha_integration.sync.sqlite import SQLiteSyncStore

BATCH = 1000
ROUNDS = 3
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support starts the private PostgreSQL
T0 = 1_700_000_000_000


def rows(n: int, start: int = 0, tag: str = "a") -> list[Record]:
    """``n`` records of about 200 bytes of JSON each."""
    out = []
    for i in range(start, start + n):
        data = {
            "symbol": "EURUSD",
            "side": "buy",
            "qty": i % 100,
            "price": 1.08 + i / 1e6,
            "note": f"{tag}-" + "x" * 90,
            "tags": ["fx", "major"],
            "n": i,
        }
        out.append(Record("w", f"r{i:07d}", data, f"{T0 + i:015d}-00000-seed"))
    return out


async def seed(store: SyncStore, n: int) -> None:
    """Write ``n`` records into a server store (not timed)."""
    for i in range(0, n, 5000):
        await store.write(rows(min(5000, n - i), i), f"{T0 + n:015d}-00000-seed")


def floor_copy(src: Path, dst: Path) -> tuple[float, float]:
    """The floor: copy every row SQLite -> SQLite, decode+encode per row, checkpoint per batch.

    Returns ``(wall seconds, CPU seconds)``.
    """
    started, cpu = now(), time.process_time()
    a = sqlite3.connect(src)
    b = sqlite3.connect(dst, isolation_level=None)
    b.execute("PRAGMA journal_mode=WAL")
    b.execute("PRAGMA synchronous=NORMAL")
    b.execute(
        "CREATE TABLE records (collection TEXT, id TEXT, data TEXT, version TEXT,"
        " PRIMARY KEY (collection, id)) WITHOUT ROWID"
    )
    b.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    after = 0
    while True:
        page = a.execute(
            "SELECT seq, collection, id, data, version FROM sync_records WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (after, BATCH),
        ).fetchall()
        if not page:
            break
        b.execute("BEGIN")
        b.executemany(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
            [(r[1], r[2], json.dumps(json.loads(r[3]), separators=(",", ":")), r[4]) for r in page],
        )
        after = page[-1][0]
        b.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (str(after),))
        b.execute("COMMIT")
    a.close()
    b.close()
    return now() - started, time.process_time() - cpu


class Server:
    """sync_app on a free loopback port."""

    def __init__(self, service: SyncService) -> None:
        self.service = service
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        root = web.Application()
        root.add_subapp("/sync", sync_app(self.service))
        self.runner = web.AppRunner(root, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/sync"
        await web.SockSite(self.runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def measure(
    store: SyncStore, n: int, n_push: int, workdir: Path, tag: str, floor_src: Path | None
) -> dict[str, Any]:
    """Initial sync of n (rounds interleaved with the floor), incremental 1,000, push n_push."""
    out: dict[str, Any] = {"initial": [], "floor": [], "initial_cpu": [], "floor_cpu": []}
    svc = SyncService(store, ["w"])
    await svc.start()
    await seed(store, n)
    config = SyncClientConfig(pull_limit=BATCH, push_batch=BATCH)
    async with Server(svc) as server:
        for r in range(ROUNDS):
            if floor_src is not None:
                # The floor runs right beside each of our rounds, so load drifts cancel out.
                wall, cpu = floor_copy(floor_src, workdir / f"{tag}-floor{r}.db")
                out["floor"].append(wall)
                out["floor_cpu"].append(cpu)
            client = SyncClient(
                workdir / f"{tag}-client{r}.db",
                server.url,
                ["w"],
                client_id=f"bench-{tag}-{r}",
                config=config,
            )
            started, cpu = now(), time.process_time()
            await client.sync()
            out["initial"].append(now() - started)
            # Server and client share this process: the CPU time covers both sides.
            out["initial_cpu"].append(time.process_time() - cpu)
            if r < ROUNDS - 1:
                await client.close()
        await store.write(rows(1000, 0, "b"), f"{T0 + 2 * n:015d}-00000-seed")  # 1,000 changes
        started = now()
        await client.sync()
        out["incremental_s"] = now() - started
        for i in range(n_push):
            await client.put("w", f"p{i}", {"n": i, "note": "y" * 150})
        started = now()
        await client.push()
        out["push_per_s"] = n_push / (now() - started)
        assert client.stats().pending == n_push  # acknowledged but held until a pull confirms
        await client.close()
    await svc.close()
    return out


async def postgres_figures(n: int, n_push: int, workdir: Path) -> dict[str, Any] | None:
    """The same figures on a private PostgreSQL server, or None without one."""
    try:
        import asyncpg  # noqa: F401
        from tests.support import PostgresServer, free_port, postgres_bin_dir

        from fokha_integration.sync.postgres import PostgresSyncStore
    except ImportError:
        return None
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fokha-bench-pg-") as pg_dir:
        pg = PostgresServer(port=free_port(), workdir=Path(pg_dir), bin_dir=bin_dir)
        pg.init()
        pg.start()
        try:
            store = PostgresSyncStore(pg.create_database())
            return await measure(store, n, n_push, workdir, "pg", None)
        finally:
            pg.stop()


def main() -> None:
    """Run and print."""
    args = parse_args(__doc__.splitlines()[0])
    n = 20_000 if args.quick else 100_000
    n_push = 5_000 if args.quick else 10_000
    report = Report("bench_sync")
    with tempfile.TemporaryDirectory(prefix="fokha-bench-sync-") as tmp:
        workdir = Path(tmp)
        log(args, f"sqlite: {n} records, push {n_push}")
        server_db = workdir / "server.db"
        ours = asyncio.run(
            measure(SQLiteSyncStore(server_db), n, n_push, workdir, "sqlite", server_db)
        )
        floor = min(ours["floor"])
        initial = min(ours["initial"])
        paired = statistics.median(
            o / f for o, f in zip(ours["initial"], ours["floor"], strict=True)
        )
        report.figure("floor_copy_s", floor)
        report.figure("sqlite_initial_s", initial)
        report.figure("sqlite_initial_vs_floor", paired)
        report.figure(
            "sqlite_initial_vs_floor_cpu", min(ours["initial_cpu"]) / min(ours["floor_cpu"])
        )
        report.figure("sqlite_incremental_1000_s", ours["incremental_s"])
        report.figure("sqlite_push_mutations_per_s", ours["push_per_s"])
        report.target("initial sync vs floor (median of paired rounds)", paired, 1.5, "<=", "x")
        report.target("incremental 1,000 changes", ours["incremental_s"], 0.3, "<=", "s")
        report.target("push on SQLite", ours["push_per_s"], 5000, ">=", "mutations/s")
        if not os.environ.get("FOKHA_BENCH_NO_PG"):
            log(args, "postgres: same workload")
            pg = asyncio.run(postgres_figures(n, n_push, workdir))
            if pg is None:
                report.notes.append("PostgreSQL not available: figures skipped")
            else:
                report.figure("postgres_initial_s", min(pg["initial"]))
                report.figure("postgres_initial_vs_floor", min(pg["initial"]) / floor)
                report.figure("postgres_incremental_1000_s", pg["incremental_s"])
                report.figure("postgres_push_mutations_per_s", pg["push_per_s"])
        report.notes.append(
            f"{n} records of ~200 bytes; batches of {BATCH}; one process, loopback HTTP"
        )
    report.emit(args.json)


if __name__ == "__main__":
    main()
