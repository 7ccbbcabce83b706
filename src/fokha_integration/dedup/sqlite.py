"""The SQLite dedup backend: one file shared by every process on one host, kept across restarts.

Each claim is ONE atomic SQL statement, an upsert with ``RETURNING``: insert the
entry, or, when the key exists, overwrite it only if it has expired, and return the
row as it now is. The claim won when the returned row carries the claim's own
random token. SQLite serialises writers on the database file, so concurrent claims
from any number of processes (each with its own connection) give exactly one FIRST.

Expiry is stored as absolute wall-clock time (Unix seconds), so entries survive a
restart of the process or the machine; expired rows are ignored at once and deleted
by a background sweep. The database runs in WAL mode with a busy timeout. With the
default ``synchronous="NORMAL"`` a committed claim survives a process crash (the
restart guarantee) but the last claims may be lost on power failure; pass
``synchronous="FULL"`` to survive that too, at a cost per claim.

Calls run on a dedicated single worker thread, so the event loop never blocks on
the file. Not for many hosts: an SQLite file on a network share is not safe — use
Redis for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ClosedError, ConfigError, map_backend_errors
from ._backend import CONFLICT, DUPLICATE, FIRST, IN_FLIGHT, ClaimResult, warn_aclose

__all__ = ["SQLiteDedupBackend"]

T = TypeVar("T")

_log = logging.getLogger("fokha_integration.dedup.sqlite")

_CLAIMED, _LEASED, _DONE = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fokha_dedup (
    type        TEXT NOT NULL,
    key         TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    state       INTEGER NOT NULL,
    fingerprint TEXT,
    token       TEXT NOT NULL,
    result      BLOB,
    PRIMARY KEY (type, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fokha_dedup_expiry ON fokha_dedup (expires_at);
"""

# Insert, or take over an expired row; a live row is left as it is. Every SET
# expression sees the old row, so the CASE keeps a live row unchanged. RETURNING
# gives the row as it now is: its token is ours exactly when this claim won.
_CLAIM = """
INSERT INTO fokha_dedup (type, key, first_seen, expires_at, state, fingerprint, token, result)
VALUES (:type, :key, :now, :expires, :state, :fp, :token, NULL)
ON CONFLICT (type, key) DO UPDATE SET
    first_seen  = CASE WHEN expires_at <= :now THEN excluded.first_seen  ELSE first_seen  END,
    state       = CASE WHEN expires_at <= :now THEN excluded.state       ELSE state       END,
    fingerprint = CASE WHEN expires_at <= :now THEN excluded.fingerprint ELSE fingerprint END,
    token       = CASE WHEN expires_at <= :now THEN excluded.token       ELSE token       END,
    result      = CASE WHEN expires_at <= :now THEN NULL                 ELSE result      END,
    expires_at  = CASE WHEN expires_at <= :now THEN excluded.expires_at  ELSE expires_at  END
RETURNING first_seen, expires_at, state, fingerprint, token, result
"""

# Store a result: on an absent or expired row, or on a live row whose token matches
# (any live row when no token is given). rowcount says whether it happened.
_COMMIT = """
INSERT INTO fokha_dedup (type, key, first_seen, expires_at, state, fingerprint, token, result)
VALUES (:type, :key, :now, :expires, 2, NULL, :newtoken, :result)
ON CONFLICT (type, key) DO UPDATE SET
    first_seen  = CASE WHEN expires_at <= :now THEN excluded.first_seen ELSE first_seen END,
    fingerprint = CASE WHEN expires_at <= :now THEN NULL ELSE fingerprint END,
    token       = CASE WHEN expires_at <= :now THEN excluded.token ELSE token END,
    state       = 2,
    result      = excluded.result,
    expires_at  = excluded.expires_at
WHERE expires_at <= :now OR :token IS NULL OR token = :token
"""

_PEEK = """
SELECT first_seen, expires_at, state, result FROM fokha_dedup
WHERE type = ? AND key = ? AND expires_at > ?
"""

_RELEASE = """
DELETE FROM fokha_dedup
WHERE type = :type AND key = :key AND expires_at > :now AND state != 2
  AND (:token IS NULL OR token = :token)
"""

_SWEEP = """
DELETE FROM fokha_dedup WHERE (type, key) IN (
    SELECT type, key FROM fokha_dedup WHERE expires_at <= ? LIMIT ?
)
"""

_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteDedupBackend:
    """Dedup entries in an SQLite file (see the module docstring).

    ``path`` is the database file (created with its folder when missing).
    ``busy_timeout`` is how long a claim waits for another process's write lock
    before failing with :class:`~fokha_integration.errors.BackendUnavailableError`.
    ``sweep_interval`` is the pause between background deletions of expired rows
    (``None`` turns the sweep off; :meth:`sweep` still works). ``clock`` gives the
    wall time stored in the file.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        sweep_interval: float | None = 30.0,
        sweep_batch: int = 1000,
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
    ) -> None:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise BackendError(
                "sqlite", f"needs SQLite >= 3.35 (RETURNING); found {sqlite3.sqlite_version}"
            )
        synchronous = _validate.string("synchronous", synchronous).upper()
        _validate.one_of("synchronous", synchronous, _SYNC_MODES)
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError("path", "must be a str or os.PathLike", path)
        self.path = Path(path)
        self._busy_timeout = _validate.positive("busy_timeout", busy_timeout)
        self._synchronous = synchronous
        self._sweep_interval = _validate.optional_number(
            "sweep_interval", sweep_interval, exclusive_minimum=0.0
        )
        self._sweep_batch = _validate.integer("sweep_batch", sweep_batch, minimum=1)
        self._clock = clock
        self._log = logger if logger is not None else _log
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fokha-dedup-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._token_prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"
        self._seq = 0
        self._seq_lock = threading.Lock()

    @property
    def evictions(self) -> int:
        """Always 0: rows are never dropped before they expire."""
        return 0

    # -- plumbing -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The worker thread's connection, opened and prepared on first use."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                self._enable_wal(conn)
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (once per file; it sticks).

        The switch needs the file to itself and SQLite answers "locked" at once,
        without its busy handler, when another process is using the file at that
        moment: retry until the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            else:
                if str(mode).lower() == "wal":
                    return
                raise BackendError("sqlite", f"{self.path} cannot use WAL (journal mode {mode})")
            time.sleep(pause)  # on the worker thread, never on the event loop
            pause = min(pause * 2, 0.05)

    def _next_token(self) -> str:
        with self._seq_lock:
            self._seq += 1
            return f"{self._token_prefix}{self._seq:x}"

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ClosedError("the SQLite dedup backend is closed")
        if self._sweeper is None and self._sweep_interval is not None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_loop(), name="fokha-dedup-sqlite-sweep"
            )
        loop = asyncio.get_running_loop()
        with map_backend_errors("sqlite", what):
            return await loop.run_in_executor(self._executor, fn, *args)

    async def _sweep_loop(self) -> None:
        assert self._sweep_interval is not None
        while not self._closed:
            await self._clock.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except ClosedError:
                return
            except Exception:
                self._log.warning("expired-row sweep of %s failed", self.path, exc_info=True)

    # -- the claim ------------------------------------------------------------

    @staticmethod
    def _answer(
        key: str, row: tuple[Any, ...], mine: str, fingerprint: str | None, lease: bool
    ) -> ClaimResult:
        first_seen, expires_at, state, fp, token, result = row
        if token == mine:
            return ClaimResult(FIRST, key, first_seen, None, expires_at, mine if lease else None)
        if fingerprint is not None and fp is not None and fp != fingerprint:
            status = CONFLICT
        elif state == _LEASED:
            status = IN_FLIGHT
        else:
            status = DUPLICATE
        return ClaimResult(status, key, first_seen, result, expires_at)

    def _claim_sync(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        conn = self._connection()
        now = self._clock.time()
        token = self._next_token()
        params = {
            "type": type,
            "key": key,
            "now": now,
            "expires": now + (ttl if lease is None else lease),
            "state": _CLAIMED if lease is None else _LEASED,
            "fp": fingerprint,
            "token": token,
        }
        row = conn.execute(_CLAIM, params).fetchone()
        return self._answer(key, row, token, fingerprint, lease is not None)

    def _claim_many_sync(self, type: str, keys: Sequence[str], ttl: float) -> list[ClaimResult]:
        conn = self._connection()
        out = []
        # One write transaction for the batch: one lock, one WAL commit.
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock.time()
            for key in keys:
                token = self._next_token()
                params = {
                    "type": type,
                    "key": key,
                    "now": now,
                    "expires": now + ttl,
                    "state": _CLAIMED,
                    "fp": None,
                    "token": token,
                }
                row = conn.execute(_CLAIM, params).fetchone()
                out.append(self._answer(key, row, token, None, False))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return out

    async def claim(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Atomically claim ``key`` (one upsert statement)."""
        return await self._run("claim", self._claim_sync, type, key, ttl, fingerprint, lease)

    async def claim_many(self, type: str, keys: Sequence[str], ttl: float) -> list[ClaimResult]:
        """Claim each key inside one write transaction."""
        if not keys:
            return []
        return await self._run("claim_many", self._claim_many_sync, type, keys, ttl)

    # -- the rest -------------------------------------------------------------

    def _peek_sync(self, type: str, key: str) -> ClaimResult | None:
        row = self._connection().execute(_PEEK, (type, key, self._clock.time())).fetchone()
        if row is None:
            return None
        first_seen, expires_at, state, result = row
        status = IN_FLIGHT if state == _LEASED else DUPLICATE
        return ClaimResult(status, key, first_seen, result, expires_at)

    async def peek(self, type: str, key: str) -> ClaimResult | None:
        """The live entry as a DUPLICATE or IN_FLIGHT result, or ``None``."""
        return await self._run("peek", self._peek_sync, type, key)

    def _commit_sync(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        now = self._clock.time()
        params = {
            "type": type,
            "key": key,
            "now": now,
            "expires": now + ttl,
            "result": result,
            "token": token,
            "newtoken": token if token is not None else self._next_token(),
        }
        return self._connection().execute(_COMMIT, params).rowcount > 0

    async def commit(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        """Store ``result`` (see :meth:`DedupBackend.commit`)."""
        return await self._run("commit", self._commit_sync, type, key, result, ttl, token)

    def _release_sync(self, type: str, key: str, token: str | None) -> bool:
        params = {"type": type, "key": key, "now": self._clock.time(), "token": token}
        return self._connection().execute(_RELEASE, params).rowcount > 0

    async def release(self, type: str, key: str, token: str | None) -> bool:
        """Drop a live, not committed entry (``token``, when given, must match)."""
        return await self._run("release", self._release_sync, type, key, token)

    def _forget_sync(self, type: str, key: str) -> bool:
        rows = (
            self._connection()
            .execute(
                "DELETE FROM fokha_dedup WHERE type = ? AND key = ? RETURNING expires_at",
                (type, key),
            )
            .fetchall()
        )
        return bool(rows) and rows[0][0] > self._clock.time()

    async def forget(self, type: str, key: str) -> bool:
        """Drop the entry whatever its state; whether a live one was dropped."""
        return await self._run("forget", self._forget_sync, type, key)

    def _clear_sync(self, type: str | None) -> int:
        conn = self._connection()
        if type is None:
            return conn.execute("DELETE FROM fokha_dedup").rowcount
        return conn.execute("DELETE FROM fokha_dedup WHERE type = ?", (type,)).rowcount

    async def clear(self, type: str | None) -> int:
        """Drop every entry of ``type`` (or all); how many rows were deleted."""
        return await self._run("clear", self._clear_sync, type)

    def _sweep_sync(self) -> int:
        conn = self._connection()
        total = 0
        while True:
            # Small batches: each is a short write transaction, so claims interleave.
            deleted = conn.execute(_SWEEP, (self._clock.time(), self._sweep_batch)).rowcount
            total += deleted
            if deleted < self._sweep_batch:
                return total

    async def sweep(self) -> int:
        """Delete expired rows now; how many were deleted."""
        return await self._run("sweep", self._sweep_sync)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        """Stop the sweep, close the connection and the worker thread."""
        if self._closed:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            if self._sweeper.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sweeper
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warn_aclose(self)
        await self.close()

    def __repr__(self) -> str:
        return f"SQLiteDedupBackend({str(self.path)!r})"
