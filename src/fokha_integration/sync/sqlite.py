"""The SQLite sync store (the embedded default): one file, WAL, one writer thread.

Each push, pull and compaction is one ``BEGIN IMMEDIATE`` transaction, so the
records, ``last_mutation_id``, the sequence counter, the HLC and the client's
acknowledged cursor are committed together or not at all. Calls run on a single
worker thread so the event loop never blocks on the file. Driver errors go
through :func:`~fokha_integration.errors.map_backend_errors` (table ``"sqlite"``):
a locked or full database is a :class:`~fokha_integration.errors.BackendUnavailableError`
(the push answers "retry"), anything else a :class:`~fokha_integration.errors.BackendError`.
"""

# ruff: noqa: S608  (SQL text is built only from constants: the column list, "?" marks)
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .. import _validate
from ..errors import ClosedError, map_backend_errors
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

__all__ = ["SQLiteSyncStore"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_records (
    collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT, version TEXT NOT NULL,
    deleted INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS sync_records_seq ON sync_records (seq);
CREATE TABLE IF NOT EXISTS sync_clients (
    client_id TEXT PRIMARY KEY, last_mutation_id INTEGER NOT NULL DEFAULT 0,
    ack_seq INTEGER NOT NULL DEFAULT 0, last_seen_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sync_conflicts (
    conflict_id INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL, id TEXT NOT NULL,
    policy TEXT NOT NULL, server TEXT, client TEXT NOT NULL, result TEXT NOT NULL,
    client_id TEXT NOT NULL, created_ms INTEGER NOT NULL, resolved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_ROW = "seq, collection, id, data, version, deleted"


def _change(row: Sequence[Any]) -> RawChange:
    return RawChange._make(row)


class SQLiteSyncStore:
    """A :class:`~fokha_integration.sync.SyncStore` in one SQLite file.

    ``synchronous`` is ``"NORMAL"`` (a committed push survives a process crash) or
    ``"FULL"`` (also a power failure).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._synchronous = _validate.one_of("synchronous", synchronous, ("NORMAL", "FULL"))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fokha-sync-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self.epoch = ""

    async def _run(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise ClosedError("the sync store is closed")

        def call() -> T:
            conn = self._connection()
            with map_backend_errors("sqlite", op):
                try:
                    return fn(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.rollback()
                    raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        """Create the schema and read (or make) the store's epoch."""

        def run(conn: sqlite3.Connection) -> str:
            conn.executescript(SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO sync_meta VALUES ('epoch', ?)", (new_epoch(),))
            for key in ("seq", "floor", "generation"):
                conn.execute("INSERT OR IGNORE INTO sync_meta VALUES (?, '0')", (key,))
            conn.execute("COMMIT")
            return str(conn.execute("SELECT value FROM sync_meta WHERE key='epoch'").fetchone()[0])

        self.epoch = await self._run("open", run)

    async def close(self) -> None:
        """Close the connection and the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM sync_meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def load_clock(self) -> str | None:
        """The last persisted HLC value."""
        return await self._run("load_clock", lambda c: self._meta(c, "clock"))

    @staticmethod
    def _write(conn: sqlite3.Connection, records: Sequence[Record], clock: str) -> None:
        seq = int(conn.execute("SELECT value FROM sync_meta WHERE key='seq'").fetchone()[0])
        rows = []
        for r in records:
            seq += 1
            data = (
                r.data_json
                if r.data_json is not None
                else None
                if r.data is None
                else dumps(r.data)
            )
            rows.append((r.collection, r.id, data, r.version, int(r.deleted), seq))
        # A key written twice in one batch: the later row replaces the earlier one.
        conn.executemany("INSERT OR REPLACE INTO sync_records VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("UPDATE sync_meta SET value=? WHERE key='seq'", (str(seq),))
        conn.execute(
            "INSERT INTO sync_meta VALUES ('clock', ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (clock,),
        )

    async def push(
        self, client_id: str, keys: Sequence[tuple[str, str]], planner: Planner
    ) -> PushPlan:
        """One transaction: read, plan, write records + conflicts + last_mutation_id + clock."""

        def run(conn: sqlite3.Connection) -> PushPlan:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT last_mutation_id FROM sync_clients WHERE client_id=?", (client_id,)
            ).fetchone()
            last = 0 if row is None else int(row[0])
            current: dict[tuple[str, str], Record] = {}
            for coll, rid in dict.fromkeys(keys):
                found = conn.execute(
                    f"SELECT {_ROW} FROM sync_records WHERE collection=? AND id=?", (coll, rid)
                ).fetchone()
                if found is not None:
                    current[(coll, rid)] = decode_record(_change(found))
            plan = planner(last, current)
            self._write(conn, plan.writes, plan.clock)
            conn.executemany(
                "INSERT INTO sync_conflicts (collection, id, policy, server, client, result,"
                " client_id, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            conn.execute(
                "INSERT INTO sync_clients (client_id, last_mutation_id) VALUES (?, ?)"
                " ON CONFLICT(client_id) DO UPDATE SET last_mutation_id=excluded.last_mutation_id",
                (client_id, plan.last_mutation_id),
            )
            conn.execute("COMMIT")
            return plan

        return await self._run("push", run)

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

        def run(conn: sqlite3.Connection) -> RawPage:
            conn.execute("BEGIN IMMEDIATE")
            high = int(self._meta(conn, "seq") or 0)
            floor = int(self._meta(conn, "floor") or 0)
            gen = int(self._meta(conn, "generation") or 0)
            request = cursor or Cursor(self.epoch, 0, gen)
            reset = request.needs_reset(self.epoch, floor, gen)
            rows: list[RawChange] = []
            has_more = reset  # a reset page is followed by the snapshot
            if not reset:
                marks = ",".join("?" * len(collections))
                # "+collection": walk the seq index, never the primary key plus a sort
                # (which made every page cost O(records): 35 ms a page at 100,000).
                found = conn.execute(
                    f"SELECT {_ROW} FROM sync_records WHERE seq > ? AND +collection IN ({marks})"
                    " ORDER BY seq LIMIT ?",
                    (request.seq, *collections, limit + 1),
                ).fetchall()
                has_more = len(found) > limit
                rows = list(map(RawChange._make, found[:limit]))
            row = conn.execute(
                "SELECT last_mutation_id FROM sync_clients WHERE client_id=?", (client_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO sync_clients (client_id, ack_seq, last_seen_ms) VALUES (?, ?, ?)"
                " ON CONFLICT(client_id) DO UPDATE SET ack_seq=excluded.ack_seq,"
                " last_seen_ms=excluded.last_seen_ms",
                (client_id, acked_seq(request, ack, reset), now_ms),
            )
            conn.execute("COMMIT")
            new = page_cursor(self.epoch, request, reset, rows, has_more, high, gen)
            return RawPage(rows, new, has_more, 0 if row is None else int(row[0]), reset, request)

        return await self._run("pull", run)

    async def write(
        self, records: Sequence[Record], clock: str, resolved: int | None = None
    ) -> None:
        """Server-side writes in one transaction."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            self._write(conn, records, clock)
            if resolved is not None:
                conn.execute(
                    "UPDATE sync_conflicts SET resolved=1 WHERE conflict_id=?", (resolved,)
                )
            conn.execute("COMMIT")

        await self._run("write", run)

    async def get(self, collection: str, id: str) -> Record | None:
        """One record."""

        def run(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(
                f"SELECT {_ROW} FROM sync_records WHERE collection=? AND id=?", (collection, id)
            ).fetchone()
            return None if row is None else decode_record(_change(row))

        return await self._run("get", run)

    async def compact(self, active_since_ms: int) -> int:
        """Drop tombstones at or below every active client's ack, raising the floor."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            below = conn.execute(
                "SELECT MIN(ack_seq) FROM sync_clients WHERE last_seen_ms >= ?", (active_since_ms,)
            ).fetchone()[0]
            if below is None:
                below = int(self._meta(conn, "seq") or 0)
            top = conn.execute(
                "SELECT MAX(seq), COUNT(*) FROM sync_records WHERE deleted=1 AND seq <= ?", (below,)
            ).fetchone()
            if not top[1]:
                conn.execute("COMMIT")
                return 0
            conn.execute("DELETE FROM sync_records WHERE deleted=1 AND seq <= ?", (below,))
            floor = max(int(self._meta(conn, "floor") or 0), int(top[0]))
            conn.execute("UPDATE sync_meta SET value=? WHERE key='floor'", (str(floor),))
            conn.execute(
                "UPDATE sync_meta SET value=CAST(value AS INTEGER)+1 WHERE key='generation'"
            )
            conn.execute("COMMIT")
            return int(top[1])

        return await self._run("compact", run)

    async def conflicts(
        self, *, collection: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[ConflictEntry]:
        """Logged conflicts, oldest first."""

        def run(conn: sqlite3.Connection) -> list[ConflictEntry]:
            rows = conn.execute(
                "SELECT * FROM sync_conflicts WHERE (? OR resolved=0)"
                " AND (? IS NULL OR collection=?)"
                " ORDER BY conflict_id LIMIT ?",
                (int(include_resolved), collection, collection, limit),
            ).fetchall()
            return [conflict_from_row(r) for r in rows]

        return await self._run("conflicts", run)

    async def get_conflict(self, conflict_id: int) -> ConflictEntry | None:
        """One conflict."""

        def run(conn: sqlite3.Connection) -> ConflictEntry | None:
            row = conn.execute(
                "SELECT * FROM sync_conflicts WHERE conflict_id=?", (conflict_id,)
            ).fetchone()
            return None if row is None else conflict_from_row(row)

        return await self._run("get_conflict", run)

    async def status(self) -> StoreStatus:
        """Counts and clients."""

        def run(conn: sqlite3.Connection) -> StoreStatus:
            live, tomb = conn.execute(
                "SELECT COALESCE(SUM(deleted=0),0), COALESCE(SUM(deleted=1),0) FROM sync_records"
            ).fetchone()
            unresolved = conn.execute(
                "SELECT COUNT(*) FROM sync_conflicts WHERE resolved=0"
            ).fetchone()[0]
            clients = tuple(
                ClientInfo(*r)
                for r in conn.execute(
                    "SELECT client_id, last_mutation_id, ack_seq, last_seen_ms FROM sync_clients"
                    " ORDER BY client_id"
                )
            )
            return StoreStatus(
                records=int(live),
                tombstones=int(tomb),
                high_seq=int(self._meta(conn, "seq") or 0),
                floor=int(self._meta(conn, "floor") or 0),
                generation=int(self._meta(conn, "generation") or 0),
                unresolved_conflicts=int(unresolved),
                clients=clients,
            )

        return await self._run("status", run)
