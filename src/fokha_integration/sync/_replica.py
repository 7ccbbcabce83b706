"""The client's local SQLite replica: server-confirmed records, the outbox, dead letters.

Plain synchronous code; :class:`~fokha_integration.sync.SyncClient` runs every call
on one worker thread. Each method is one transaction, so a page of downloaded
changes and the cursor that covers it, or a local write and its outbox entry, are
committed together or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["OutboxEntry", "Replica"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, version TEXT NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    mutation_id INTEGER PRIMARY KEY, collection TEXT NOT NULL, id TEXT NOT NULL,
    op TEXT NOT NULL, data TEXT, version TEXT NOT NULL, base_version TEXT
);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (collection, id, mutation_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    mutation_id INTEGER NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL, op TEXT NOT NULL,
    data TEXT, version TEXT NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

OutboxEntry = tuple[int, str, str, str, "str | None", str, "str | None"]
"""``(mutation_id, collection, id, op, data_json, version, base_version)``."""


class Replica:
    """One client's SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        # A second connection for counts read from the event loop thread (stats()),
        # so they never interleave with a transaction on the worker thread.
        self.reader = sqlite3.connect(path, check_same_thread=False, timeout=10)

    def close(self) -> None:
        """Close the file."""
        self.reader.close()
        self.conn.close()

    def _tx(self) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def _set(self, key: str, value: str | int | None) -> None:
        self.conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, None if value is None else str(value)),
        )

    def meta(self, key: str) -> str | None:
        """A stored value (client_id, cursor, clock, next_mutation_id, pushed_through)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def init_meta(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless present; the stored value."""
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        stored = self.meta(key)
        assert stored is not None
        return stored

    def _run(self, fn: Any, *args: Any) -> Any:
        self._tx()
        try:
            result = fn(*args)
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.execute("COMMIT")
        return result

    def _base_version(self, collection: str, id: str) -> str | None:
        row = self.conn.execute(
            "SELECT version FROM outbox WHERE collection=? AND id=?"
            " ORDER BY mutation_id DESC LIMIT 1",
            (collection, id),
        ).fetchone()
        if row is None:
            row = self.conn.execute(
                "SELECT version FROM records WHERE collection=? AND id=?", (collection, id)
            ).fetchone()
        return None if row is None else str(row[0])

    def enqueue(
        self, collection: str, id: str, op: str, data: str | None, version: str, clock: str
    ) -> int:
        """Record a local write in the outbox; its mutation id."""

        def run() -> int:
            mid = int(self.meta("next_mutation_id") or 1)
            base = self._base_version(collection, id)
            self.conn.execute(
                "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?)",
                (mid, collection, id, op, data, version, base),
            )
            self._set("next_mutation_id", mid + 1)
            self._set("clock", clock)
            return mid

        return int(self._run(run))

    def get(self, collection: str, id: str) -> tuple[str | None, str] | None:
        """``(data_json or None if deleted, version)`` as the app sees it, or ``None``."""
        row = self.conn.execute(
            "SELECT data, version FROM outbox WHERE collection=? AND id=?"
            " ORDER BY mutation_id DESC LIMIT 1",
            (collection, id),
        ).fetchone()
        if row is None:
            row = self.conn.execute(
                "SELECT data, version FROM records WHERE collection=? AND id=?", (collection, id)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def query(self, collection: str) -> dict[str, tuple[str | None, str]]:
        """Every record of ``collection`` as the app sees it (``None`` data: deleted locally)."""
        out: dict[str, tuple[str | None, str]] = {
            r[0]: (r[1], r[2])
            for r in self.conn.execute(
                "SELECT id, data, version FROM records WHERE collection=?", (collection,)
            )
        }
        for r in self.conn.execute(
            "SELECT id, data, version FROM outbox WHERE collection=? ORDER BY mutation_id",
            (collection,),
        ):
            out[r[0]] = (r[1], r[2])
        return out

    def pending(self, after: int, limit: int) -> list[OutboxEntry]:
        """Outbox entries with ``mutation_id > after``, oldest first."""
        rows = self.conn.execute(
            "SELECT mutation_id, collection, id, op, data, version, base_version FROM outbox"
            " WHERE mutation_id > ? ORDER BY mutation_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [tuple(r) for r in rows]

    def counts(self) -> tuple[int, int]:
        """``(outbox entries, dead letters)``."""
        pending = self.reader.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        dead = self.reader.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return int(pending), int(dead)

    def dead_letters(self) -> list[dict[str, Any]]:
        """The dead-letter table, oldest first."""
        cols = ("mutation_id", "collection", "id", "op", "data", "version", "reason", "created_ms")
        rows = self.conn.execute(f"SELECT {', '.join(cols)} FROM dead_letters ORDER BY rowid")  # noqa: S608
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def _bury(self, mutation_id: int, reason: str, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO dead_letters SELECT mutation_id, collection, id, op, data, version, ?, ?"
            " FROM outbox WHERE mutation_id=?",
            (reason, now_ms, mutation_id),
        )
        self.conn.execute("DELETE FROM outbox WHERE mutation_id=?", (mutation_id,))

    def acknowledge(
        self, last_mutation_id: int, rejected: Sequence[tuple[int, str]], now_ms: int
    ) -> None:
        """A push answer: rejected entries to dead letters, ``pushed_through`` advanced."""

        def run() -> None:
            for mid, reason in rejected:
                self._bury(mid, reason, now_ms)
            current = int(self.meta("pushed_through") or 0)
            self._set("pushed_through", max(current, last_mutation_id))

        self._run(run)

    def bury_and_renumber(self, mutation_id: int, reason: str, now_ms: int) -> None:
        """A mutation the server can never accept: dead-letter it, close the id gap behind it."""

        def run() -> None:
            self._bury(mutation_id, reason, now_ms)
            self.conn.execute(
                "UPDATE outbox SET mutation_id = -mutation_id WHERE mutation_id > ?", (mutation_id,)
            )
            self.conn.execute(
                "UPDATE outbox SET mutation_id = -mutation_id - 1 WHERE mutation_id < 0"
            )
            self._set("next_mutation_id", int(self.meta("next_mutation_id") or 1) - 1)

        self._run(run)

    def set_pushed_through(self, value: int) -> None:
        """Where the next push starts (after a gap answer)."""
        self._run(self._set, "pushed_through", value)

    def apply_page(
        self,
        changes: Sequence[dict[str, Any]],
        data_json: Sequence[str | None],
        cursor: str,
        final: bool,
        last_mutation_id: int,
        clock: str,
    ) -> None:
        """Downloaded changes and their cursor, together; the last page drops acked entries."""

        def run() -> None:
            puts = []
            dels = []
            for ch, data in zip(changes, data_json, strict=True):
                if ch["deleted"]:
                    dels.append((ch["collection"], ch["id"]))
                else:
                    puts.append((ch["collection"], ch["id"], data, ch["version"]))
            if puts:
                self.conn.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", puts)
            if dels:
                self.conn.executemany("DELETE FROM records WHERE collection=? AND id=?", dels)
            self._set("cursor", cursor)
            self._set("clock", clock)
            if final:
                self.conn.execute("DELETE FROM outbox WHERE mutation_id <= ?", (last_mutation_id,))
                current = int(self.meta("pushed_through") or 0)
                self._set("pushed_through", max(current, last_mutation_id))

        self._run(run)

    def reset(self, collections: Sequence[str], cursor: str) -> None:
        """reset_required: drop the downloaded copies and store the new cursor, together."""

        def run() -> None:
            self.conn.executemany(
                "DELETE FROM records WHERE collection=?", [(c,) for c in collections]
            )
            self._set("cursor", cursor)

        self._run(run)
