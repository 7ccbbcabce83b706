"""The PostgreSQL sync store (needs the ``postgres`` extra: asyncpg).

Driver chosen by measurement (docs/sync.md, "PostgreSQL"): asyncpg upserted
52-55k rows/s against psycopg 3's 33-50k on this store's push statement, reads
level. Every push, pull and compaction is one transaction that first locks the
``seq`` row of ``sync_meta`` (``SELECT ... FOR UPDATE``), so sequence numbers are
handed out in commit order and a pull never skips a row committed late; records,
``last_mutation_id``, the clock and a client's cursor commit together. A push
sends ``NOTIFY fokha_sync`` so other server processes can poke their clients
(:meth:`PostgresSyncStore.listen`). Driver errors go through
:func:`~fokha_integration.errors.map_backend_errors` (table ``"postgres"``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .. import _validate
from ..errors import ClosedError, ConfigError, map_backend_errors
from ._core import Cursor, PushPlan
from ._store import (
    Planner,
    RawChange,
    RawPage,
    acked_seq,
    conflict_from_row,
    decode_record,
    dumps,
    new_epoch,
    page_cursor,
    record_json,
)
from ._types import ClientInfo, ConflictEntry, Record, StoreStatus

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "PostgresSyncStore needs asyncpg: pip install 'fokha-integration[postgres]'"
    ) from exc

__all__ = ["PostgresSyncStore"]

CHANNEL = "fokha_sync"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_records (
    collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT, version TEXT NOT NULL,
    deleted BOOLEAN NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (collection, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS sync_records_seq ON sync_records (seq);
CREATE TABLE IF NOT EXISTS sync_clients (
    client_id TEXT PRIMARY KEY, last_mutation_id BIGINT NOT NULL DEFAULT 0,
    ack_seq BIGINT NOT NULL DEFAULT 0, last_seen_ms BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sync_conflicts (
    conflict_id BIGSERIAL PRIMARY KEY, collection TEXT NOT NULL, id TEXT NOT NULL,
    policy TEXT NOT NULL, server TEXT, client TEXT NOT NULL, result TEXT NOT NULL,
    client_id TEXT NOT NULL, created_ms BIGINT NOT NULL, resolved BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_ROW = "seq, collection, id, data, version, deleted"


def _change(row: Any) -> RawChange:
    return RawChange(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


class PostgresSyncStore:
    """A :class:`~fokha_integration.sync.SyncStore` on a PostgreSQL server (``dsn``)."""

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("dsn", "must be a PostgreSQL connection string", dsn)
        self._dsn = dsn
        self._pool_size = _validate.integer("pool_size", pool_size, minimum=1)
        self._pool: asyncpg.Pool | None = None
        self._listener: Any = None
        self._listen_tasks: set[asyncio.Future[None]] = set()
        self.epoch = ""

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ClosedError("the sync store is not open")
        return self._pool

    async def open(self) -> None:
        """Connect, create the schema, read (or make) the epoch."""
        with map_backend_errors("postgres", "open"):
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7715)")
                await conn.execute(SCHEMA)
                await conn.execute(
                    "INSERT INTO sync_meta VALUES ('epoch', $1) ON CONFLICT DO NOTHING", new_epoch()
                )
                for key in ("seq", "floor", "generation"):
                    await conn.execute(
                        "INSERT INTO sync_meta VALUES ($1, '0') ON CONFLICT DO NOTHING", key
                    )
                self.epoch = await conn.fetchval("SELECT value FROM sync_meta WHERE key='epoch'")

    async def close(self) -> None:
        """Close the listener and the pool; idempotent."""
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def listen(self, callback: Callable[[list[str]], Awaitable[None] | None]) -> None:
        """Call ``callback(collections)`` after every commit that changed records, from any
        server process on this database (LISTEN/NOTIFY); e.g. to poke local clients."""
        with map_backend_errors("postgres", "listen"):
            self._listener = await asyncpg.connect(self._dsn)
        tasks: set[asyncio.Future[None]] = self._listen_tasks

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            result = callback(list(json.loads(payload)))
            if result is not None:
                task = asyncio.ensure_future(result)
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        await self._listener.add_listener(CHANNEL, on_notify)

    @staticmethod
    async def _meta(conn: Any, key: str, lock: bool = False) -> str | None:
        sql = "SELECT value FROM sync_meta WHERE key=$1" + (" FOR UPDATE" if lock else "")
        value = await conn.fetchval(sql, key)
        return None if value is None else str(value)

    async def load_clock(self) -> str | None:
        """The last persisted HLC value."""
        with map_backend_errors("postgres", "load_clock"):
            async with self._require().acquire() as conn:
                return await self._meta(conn, "clock")

    async def _write(self, conn: Any, records: Sequence[Record], clock: str) -> None:
        seq = int(await self._meta(conn, "seq", lock=True) or 0)
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for r in records:
            seq += 1
            data = (
                r.data_json
                if r.data_json is not None
                else None
                if r.data is None
                else dumps(r.data)
            )
            latest[(r.collection, r.id)] = (r.collection, r.id, data, r.version, r.deleted, seq)
        if latest:
            await conn.executemany(
                "INSERT INTO sync_records VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (collection, id)"
                " DO UPDATE SET data=excluded.data, version=excluded.version,"
                " deleted=excluded.deleted, seq=excluded.seq",
                list(latest.values()),
            )
        await conn.execute("UPDATE sync_meta SET value=$1 WHERE key='seq'", str(seq))
        if records:  # delivered at commit, to every LISTENing server process
            collections = sorted({r.collection for r in records})
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps(collections))
        await conn.execute(
            "INSERT INTO sync_meta VALUES ('clock', $1) ON CONFLICT (key) DO UPDATE SET value=$1",
            clock,
        )

    async def push(
        self, client_id: str, keys: Sequence[tuple[str, str]], planner: Planner
    ) -> PushPlan:
        """One transaction: lock, read, plan, write, notify."""
        with map_backend_errors("postgres", "push"):
            async with self._require().acquire() as conn, conn.transaction():
                await self._meta(conn, "seq", lock=True)
                last = await conn.fetchval(
                    "SELECT last_mutation_id FROM sync_clients WHERE client_id=$1", client_id
                )
                unique = list(dict.fromkeys(keys))
                current: dict[tuple[str, str], Record] = {}
                if unique:
                    rows = await conn.fetch(
                        f"SELECT {_ROW} FROM sync_records r JOIN unnest($1::text[], $2::text[])"
                        " AS k(c, i) ON r.collection = k.c AND r.id = k.i",
                        [k[0] for k in unique],
                        [k[1] for k in unique],
                    )
                    for row in rows:
                        rec = decode_record(_change(row))
                        current[(rec.collection, rec.id)] = rec
                plan = planner(int(last or 0), current)
                await self._write(conn, plan.writes, plan.clock)
                if plan.conflicts:
                    await conn.executemany(
                        "INSERT INTO sync_conflicts (collection, id, policy, server, client,"
                        " result, client_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        [
                            (
                                c.collection,
                                c.id,
                                c.policy,
                                record_json(c.server),
                                record_json(c.client),
                                record_json(c.result),
                                c.client_id,
                                c.created_ms,
                            )
                            for c in plan.conflicts
                        ],
                    )
                await conn.execute(
                    "INSERT INTO sync_clients (client_id, last_mutation_id) VALUES ($1, $2)"
                    " ON CONFLICT (client_id) DO UPDATE"
                    " SET last_mutation_id=excluded.last_mutation_id",
                    client_id,
                    plan.last_mutation_id,
                )
                return plan

    async def pull(
        self,
        client_id: str,
        collections: Sequence[str],
        cursor: Cursor | None,
        limit: int,
        now_ms: int,
        ack: Cursor | None = None,
    ) -> RawPage:
        """One transaction: floor check, page read, ack written."""
        with map_backend_errors("postgres", "pull"):
            async with self._require().acquire() as conn, conn.transaction():
                # Lock the seq row so the page and `high` agree with every committed push.
                high = int(await self._meta(conn, "seq", lock=True) or 0)
                floor = int(await self._meta(conn, "floor") or 0)
                gen = int(await self._meta(conn, "generation") or 0)
                request = cursor or Cursor(self.epoch, 0, gen)
                reset = request.needs_reset(self.epoch, floor, gen)
                rows: list[RawChange] = []
                has_more = reset  # a reset page is followed by the snapshot
                if not reset:
                    found = await conn.fetch(
                        f"SELECT {_ROW} FROM sync_records WHERE seq > $1 AND collection = ANY($2)"
                        " ORDER BY seq LIMIT $3",
                        request.seq,
                        list(collections),
                        limit + 1,
                    )
                    has_more = len(found) > limit
                    rows = [_change(r) for r in found[:limit]]
                last = await conn.fetchval(
                    "SELECT last_mutation_id FROM sync_clients WHERE client_id=$1", client_id
                )
                await conn.execute(
                    "INSERT INTO sync_clients (client_id, ack_seq, last_seen_ms)"
                    " VALUES ($1, $2, $3)"
                    " ON CONFLICT (client_id) DO UPDATE SET ack_seq=excluded.ack_seq,"
                    " last_seen_ms=excluded.last_seen_ms",
                    client_id,
                    acked_seq(request, ack, reset),
                    now_ms,
                )
                new = page_cursor(self.epoch, request, reset, rows, has_more, high, gen)
                return RawPage(rows, new, has_more, int(last or 0), reset, request)

    async def write(
        self, records: Sequence[Record], clock: str, resolved: int | None = None
    ) -> None:
        """Server-side writes in one transaction."""
        with map_backend_errors("postgres", "write"):
            async with self._require().acquire() as conn, conn.transaction():
                await self._write(conn, records, clock)
                if resolved is not None:
                    await conn.execute(
                        "UPDATE sync_conflicts SET resolved=TRUE WHERE conflict_id=$1", resolved
                    )

    async def get(self, collection: str, id: str) -> Record | None:
        """One record."""
        with map_backend_errors("postgres", "get"):
            async with self._require().acquire() as conn:
                row = await conn.fetchrow(
                    f"SELECT {_ROW} FROM sync_records WHERE collection=$1 AND id=$2", collection, id
                )
                return None if row is None else decode_record(_change(row))

    async def compact(self, active_since_ms: int) -> int:
        """Drop tombstones at or below every active client's ack, raising the floor."""
        with map_backend_errors("postgres", "compact"):
            async with self._require().acquire() as conn, conn.transaction():
                high = int(await self._meta(conn, "seq", lock=True) or 0)
                below = await conn.fetchval(
                    "SELECT MIN(ack_seq) FROM sync_clients WHERE last_seen_ms >= $1",
                    active_since_ms,
                )
                below = high if below is None else int(below)
                gone = await conn.fetchrow(
                    "WITH gone AS (DELETE FROM sync_records WHERE deleted AND seq <= $1"
                    " RETURNING seq) SELECT COUNT(*), MAX(seq) FROM gone",
                    below,
                )
                if not gone[0]:
                    return 0
                floor = max(int(await self._meta(conn, "floor") or 0), int(gone[1]))
                await conn.execute("UPDATE sync_meta SET value=$1 WHERE key='floor'", str(floor))
                await conn.execute(
                    "UPDATE sync_meta SET value=(value::bigint + 1)::text WHERE key='generation'"
                )
                return int(gone[0])

    async def conflicts(
        self, *, collection: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[ConflictEntry]:
        """Logged conflicts, oldest first."""
        with map_backend_errors("postgres", "conflicts"):
            async with self._require().acquire() as conn:
                rows = await conn.fetch(
                    "SELECT * FROM sync_conflicts WHERE ($1 OR NOT resolved)"
                    " AND ($2::text IS NULL OR collection=$2) ORDER BY conflict_id LIMIT $3",
                    include_resolved,
                    collection,
                    limit,
                )
                return [conflict_from_row(r) for r in rows]

    async def get_conflict(self, conflict_id: int) -> ConflictEntry | None:
        """One conflict."""
        with map_backend_errors("postgres", "get_conflict"):
            async with self._require().acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM sync_conflicts WHERE conflict_id=$1", conflict_id
                )
                return None if row is None else conflict_from_row(row)

    async def status(self) -> StoreStatus:
        """Counts and clients."""
        with map_backend_errors("postgres", "status"):
            async with self._require().acquire() as conn:
                counts = await conn.fetchrow(
                    "SELECT COUNT(*) FILTER (WHERE NOT deleted), COUNT(*) FILTER (WHERE deleted)"
                    " FROM sync_records"
                )
                unresolved = await conn.fetchval(
                    "SELECT COUNT(*) FROM sync_conflicts WHERE NOT resolved"
                )
                clients = tuple(
                    ClientInfo(r[0], int(r[1]), int(r[2]), int(r[3]))
                    for r in await conn.fetch(
                        "SELECT client_id, last_mutation_id, ack_seq, last_seen_ms"
                        " FROM sync_clients"
                        " ORDER BY client_id"
                    )
                )
                return StoreStatus(
                    records=int(counts[0]),
                    tombstones=int(counts[1]),
                    high_seq=int(await self._meta(conn, "seq") or 0),
                    floor=int(await self._meta(conn, "floor") or 0),
                    generation=int(await self._meta(conn, "generation") or 0),
                    unresolved_conflicts=int(unresolved),
                    clients=clients,
                )
