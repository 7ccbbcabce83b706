"""The PostgreSQL dedup backend: one table shared by every process on every host.

Needs the ``[postgres]`` extra (asyncpg). A claim is one statement and one round
trip in the common cases (a new key, a live entry): an ``INSERT ... ON CONFLICT
(type, key) DO UPDATE SET state = d.state WHERE <the row is live> RETURNING``
inserts the entry, or locks the live row and returns it as it is; the claim won
when the returned row carries the claim's own random token. Only a key whose
entry has expired (or is being taken over) costs a second statement: the fast one
returns no row, and the take-over upsert (``CASE WHEN <expired>`` in every column)
runs. Both statements see the newest committed row under its row lock, so
concurrent claims of one key are serialised and exactly one is
:attr:`~fokha_integration.dedup.ClaimStatus.FIRST`. The live row is still written
back to itself (one dead tuple per repeated claim, which autovacuum reclaims; see
docs/postgres.md): ``RETURNING`` answers only for rows the statement wrote.

Times are Unix seconds stored as ``float8``. By default they come from the
server's clock (``statement_timestamp()``), so hosts with skewed clocks agree; pass
``clock=`` to use that clock instead (tests use a manual clock). Expired rows are
ignored at once and deleted by a background sweep in small batches with
``FOR UPDATE SKIP LOCKED``: the sweep never waits on a row a claim holds, and a
claim never waits on the sweep.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any, cast

from .. import _validate as v
from .._aio import cancel_and_wait
from .._postgres import ConnectionPool, PostgresPool, check_prefix, migrate
from ..clock import Clock
from ..errors import ClosedError
from ._backend import CONFLICT, DUPLICATE, FIRST, IN_FLIGHT, ClaimResult, warn_aclose

__all__ = ["PostgresDedupBackend"]

_log = logging.getLogger("fokha_integration.dedup.postgres")

_CLAIMED, _LEASED, _DONE = 0, 1, 2

# ClaimResult without its Python-level __new__ (every field given): the claim's answer.
_new = cast(Callable[[type[ClaimResult], tuple[Any, ...]], ClaimResult], tuple.__new__)

# "now": the caller's clock when given ($n::float8), else the server's.
# statement_timestamp() is one value for the whole statement, so it may be written
# twice in one VALUES row (a VALUES row is cheaper than a subquery for "now").
# date_part() is float8 already; extract() would compute a numeric and convert it.
_NOW = "coalesce({}::float8, date_part('epoch', statement_timestamp()))"


def _claim_params(fingerprint: bool, clock: bool) -> tuple[str, str, str]:
    """The column list, VALUES row and RETURNING list of a single claim.

    Parameters: $1 type, $2 key, $3 ttl, $4 state, $5 token, then $6 fingerprint
    (``fingerprint``), then the caller's clock (``clock``). A claim without a
    fingerprint leaves the column out (NULL) and does not read it back: fewer
    parameters and columns are less work for the server and for asyncpg on every
    claim. Without a clock "now" is the server's, ``statement_timestamp()``: one
    value for the whole statement, so it may be written twice in the VALUES row
    (cheaper than a subquery).
    """
    n = 6 + fingerprint
    now = f"${n}::float8" if clock else "date_part('epoch', statement_timestamp())"
    cols = "type, key, first_seen, expires_at, state, token" + (
        ", fingerprint" if fingerprint else ""
    )
    values = f"$1, $2, {now}, {now} + $3, $4, $5" + (", $6" if fingerprint else "")
    returning = "first_seen, expires_at, state, token, result" + (
        ", fingerprint" if fingerprint else ""
    )
    return cols, values, returning


# The take-over's SET clause: every expression sees the old row (d); a live row
# (another claim took the key over meanwhile) is written back as it is, an expired
# one takes the new values. excluded.first_seen is the claim's "now".
_EXPIRED = "d.expires_at <= excluded.first_seen"
_TAKE_OVER_SET = ",\n    ".join(
    [
        f"first_seen = CASE WHEN {_EXPIRED} THEN excluded.first_seen ELSE d.first_seen END",
        f"result = CASE WHEN {_EXPIRED} THEN NULL ELSE d.result END",
    ]
    + [
        f"{c} = CASE WHEN {_EXPIRED} THEN excluded.{c} ELSE d.{c} END"
        for c in ("expires_at", "state", "fingerprint", "token")
    ]
)


def _claim_sql(p: str, fingerprint: bool, clock: bool) -> str:
    # The fast path: a new key is inserted, a live row is locked and returned as it
    # is (RETURNING answers only for a row written, hence the no-op SET). An expired
    # row is left alone and nothing is returned: then the take-over runs. Fewer
    # expressions than the take-over: each one costs the server on every call.
    cols, values, returning = _claim_params(fingerprint, clock)
    return f"""
INSERT INTO {p}dedup AS d ({cols})
VALUES ({values})
ON CONFLICT (type, key) DO UPDATE SET state = d.state
WHERE d.expires_at > excluded.first_seen
RETURNING {returning}
"""


def _take_over_sql(p: str, fingerprint: bool, clock: bool) -> str:
    # The same parameters as _claim_sql, and an answer in every case.
    cols, values, returning = _claim_params(fingerprint, clock)
    return f"""
INSERT INTO {p}dedup AS d ({cols})
VALUES ({values})
ON CONFLICT (type, key) DO UPDATE SET
    {_TAKE_OVER_SET}
RETURNING {returning}
"""


def _claim_many_sql(p: str) -> str:
    # A batch writes nothing for a key already held: DO NOTHING, then the live rows
    # as the statement's snapshot saw them (the CTE's inserts are not visible to the
    # SELECT, and NOT IN keeps a key the batch inserted from also showing its old,
    # since deleted row). A key in neither (its entry expired, or another session
    # committed it after this statement began) is left to the take-over. The fixed
    # cost of the CTE, too high for one key (see _claim_sql), is shared by the batch.
    # Keys are sorted and inserted in that order (ORDER BY u.i): two batches with
    # overlapping keys queue behind each other instead of deadlocking.
    return f"""
WITH n AS (SELECT {_NOW.format("$5")} AS now),
ins AS (
    INSERT INTO {p}dedup (type, key, first_seen, expires_at, state, fingerprint, token)
    SELECT $1, u.key, n.now, n.now + $2, 0, NULL, $4
    FROM unnest($3::text[]) WITH ORDINALITY AS u(key, i), n
    ORDER BY u.i
    ON CONFLICT (type, key) DO NOTHING
    RETURNING key, first_seen, expires_at, state, token, result
)
SELECT key, first_seen, expires_at, state, token, result FROM ins
UNION ALL
SELECT d.key, d.first_seen, d.expires_at, d.state, d.token, d.result
FROM {p}dedup d, n
WHERE d.type = $1 AND d.key = ANY($3::text[]) AND d.expires_at > n.now
    AND d.key NOT IN (SELECT key FROM ins)
"""


def _take_over_many_sql(p: str) -> str:
    # The batch's take-over: the parameters of _claim_many_sql, a row for every key.
    return f"""
INSERT INTO {p}dedup AS d (type, key, first_seen, expires_at, state, fingerprint, token)
SELECT $1, u.key, n.now, n.now + $2, 0, NULL, $4
FROM unnest($3::text[]) WITH ORDINALITY AS u(key, i),
    (SELECT {_NOW.format("$5")} AS now) n
ORDER BY u.i
ON CONFLICT (type, key) DO UPDATE SET
    {_TAKE_OVER_SET}
RETURNING key, first_seen, expires_at, state, token, result
"""


def _commit_sql(p: str) -> str:
    expired = _EXPIRED
    return f"""
INSERT INTO {p}dedup AS d (type, key, first_seen, expires_at, state, fingerprint, token, result)
VALUES ($1, $2, {_NOW.format("$6")}, {_NOW.format("$6")} + $3, 2, NULL, $4, $5)
ON CONFLICT (type, key) DO UPDATE SET
    first_seen  = CASE WHEN {expired} THEN excluded.first_seen ELSE d.first_seen END,
    fingerprint = CASE WHEN {expired} THEN NULL ELSE d.fingerprint END,
    token       = CASE WHEN {expired} THEN excluded.token ELSE d.token END,
    state       = 2,
    result      = excluded.result,
    expires_at  = excluded.expires_at
WHERE {expired} OR $7::text IS NULL OR d.token = $7
RETURNING 1
"""


class PostgresDedupBackend:
    """Dedup entries in a PostgreSQL table (see the module docstring).

    ``dsn`` is a libpq URL (``postgresql://user@host:5432/db``); ``limits`` bounds
    the connection pool the backend opens on first use. ``prefix`` starts every
    table name (default ``fokha_``). ``migrate`` creates or upgrades the tables on
    first use (else run ``fokha db migrate``).
    ``sweep_interval`` is the pause between background deletions of expired rows
    (``None``: no background sweep; :meth:`sweep` still works), ``sweep_batch`` the
    rows each deleting statement takes. ``clock``: see the module docstring.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        limits: PostgresPool | None = None,
        prefix: str = "fokha_",
        migrate: bool = True,
        sweep_interval: float | None = 30.0,
        sweep_batch: int = 1000,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._dsn = v.string("dsn", dsn)
        self._pool: ConnectionPool | None = None
        self._limits = limits if limits is not None else PostgresPool()
        self._p = check_prefix(prefix)
        self._migrate = v.boolean("migrate", migrate)
        self._sweep_interval = v.optional_number(
            "sweep_interval", sweep_interval, exclusive_minimum=0.0
        )
        self._sweep_batch = v.integer("sweep_batch", sweep_batch, minimum=1, maximum=100_000)
        self._clock = clock
        self._log = logger if logger is not None else _log
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._token_prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"
        self._seq = itertools.count(1)
        # [with a fingerprint] -> the claim's statement, and its take-over.
        timed = clock is not None
        self._sql_claim = (_claim_sql(self._p, False, timed), _claim_sql(self._p, True, timed))
        self._sql_take_over = (
            _take_over_sql(self._p, False, timed),
            _take_over_sql(self._p, True, timed),
        )
        self._sql_claim_many = _claim_many_sql(self._p)
        self._sql_take_over_many = _take_over_many_sql(self._p)
        self._sql_commit = _commit_sql(self._p)

    @property
    def evictions(self) -> int:
        """Always 0: rows are never dropped before they expire."""
        return 0

    # -- plumbing -------------------------------------------------------------

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock.time()

    def _token(self) -> str:
        return f"{self._token_prefix}{next(self._seq):x}"

    async def _open(self) -> ConnectionPool:
        if self._closed:
            raise ClosedError("the PostgreSQL dedup backend is closed")
        async with self._ready_lock:
            if not self._ready:
                if self._pool is None:
                    pool = ConnectionPool(self._dsn, self._limits)
                    await pool.open()
                    self._pool = pool
                if self._migrate:
                    async with self._acquire() as conn:
                        await migrate(conn, self._p)
                if self._sweep_interval is not None:
                    self._sweeper = asyncio.get_running_loop().create_task(
                        self._sweep_loop(), name="fokha-dedup-postgres-sweep"
                    )
                self._ready = True
        assert self._pool is not None
        return self._pool

    def _acquire(self) -> Any:
        assert self._pool is not None
        return self._pool.lease()

    async def _fetchrow(self, what: str, sql: str, *args: Any) -> Any:
        pool = self._pool if self._ready else None
        if pool is None:
            pool = await self._open()
        return await pool.fetchrow(what, sql, *args)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        pool = self._pool if self._ready else None
        if pool is None:
            pool = await self._open()
        return await pool.fetch(what, sql, *args)

    async def _sweep_loop(self) -> None:
        assert self._sweep_interval is not None
        while not self._closed:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except ClosedError:
                return
            except Exception:
                self._log.warning("expired-row sweep failed", exc_info=True)

    # -- the claim ------------------------------------------------------------

    async def claim(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Atomically claim ``key``: one statement, two when its entry has expired."""
        pool = self._pool if self._ready else await self._open()
        assert pool is not None
        token = self._token()
        args: tuple[Any, ...]
        if lease is None:
            args = (type, key, float(ttl), _CLAIMED, token)
        else:
            args = (type, key, float(lease), _LEASED, token)
        if fingerprint is not None:
            args += (fingerprint,)
        if self._clock is not None:
            args += (self._clock.time(),)
        with_fp = fingerprint is not None
        sql = self._sql_claim[with_fp]
        # pool.fetchrow's steps, inline (one coroutine layer less on the hot path),
        # with the connection's prepared statement (no statement-cache lookup).
        conn = pool.checkout() or await pool.lend("claim")
        try:
            stmt = pool.prepared(conn, sql) or await pool.prepare(conn, sql)
            row = await stmt.fetchrow(*args)
        except BaseException as exc:
            if not pool.failed(conn, exc, "claim"):
                raise
            # The schema changed under the prepared statement, which did not run.
            row = await pool.fetchrow("claim", sql, *args)
        else:
            pool.checkin(conn)
        if row is None:  # the entry has expired: take it over
            row = await pool.fetchrow("claim", self._sql_take_over[with_fp], *args)
        first_seen, expires_at, state, holder, result = row[:5]
        if holder == token:
            mine = token if lease is not None else None
            return _new(ClaimResult, (FIRST, key, first_seen, None, expires_at, mine, False))
        if with_fp:
            stored = row[5]
            if stored is not None and stored != fingerprint:
                return _new(
                    ClaimResult, (CONFLICT, key, first_seen, result, expires_at, None, False)
                )
        status = IN_FLIGHT if state == _LEASED else DUPLICATE
        return _new(ClaimResult, (status, key, first_seen, result, expires_at, None, False))

    async def claim_many(self, type: str, keys: Sequence[str], ttl: float) -> list[ClaimResult]:
        """Claim each key in one statement (two when some entries had expired); a key
        repeated in ``keys`` is DUPLICATE."""
        if not keys:
            return []
        pool = self._pool if self._ready else await self._open()
        assert pool is not None
        # Sorted: the lock order of every batch (see _claim_many_sql). One token for
        # the batch: a row carries it only when this batch wrote it.
        unique = sorted(set(keys))
        token = self._token()
        args = (type, float(ttl), unique, token, self._now())
        rows = await pool.fetch("claim_many", self._sql_claim_many, *args)
        by_key = {row["key"]: row for row in rows}
        if len(by_key) < len(unique):
            missing = [key for key in unique if key not in by_key]
            args = (type, float(ttl), missing, token, self._now())
            rows = await pool.fetch("claim_many", self._sql_take_over_many, *args)
            by_key.update((row["key"], row) for row in rows)
        out: list[ClaimResult] = []
        won: set[str] = set()
        for key in keys:
            row = by_key[key]
            if row["token"] == token and key not in won:
                won.add(key)
                out.append(ClaimResult(FIRST, key, row["first_seen"], None, row["expires_at"]))
            elif row["state"] == _LEASED:
                out.append(
                    ClaimResult(IN_FLIGHT, key, row["first_seen"], row["result"], row["expires_at"])
                )
            else:
                out.append(
                    ClaimResult(DUPLICATE, key, row["first_seen"], row["result"], row["expires_at"])
                )
        return out

    # -- the rest -------------------------------------------------------------

    async def peek(self, type: str, key: str) -> ClaimResult | None:
        """The live entry as a DUPLICATE or IN_FLIGHT result, or ``None``."""
        row = await self._fetchrow(
            "peek",
            f"SELECT first_seen, expires_at, state, result FROM {self._p}dedup"
            f" WHERE type = $1 AND key = $2 AND expires_at > {_NOW.format('$3')}",
            type,
            key,
            self._now(),
        )
        if row is None:
            return None
        status = IN_FLIGHT if row["state"] == _LEASED else DUPLICATE
        return ClaimResult(status, key, row["first_seen"], row["result"], row["expires_at"])

    async def commit(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        """Store ``result`` (see :meth:`DedupBackend.commit`)."""
        row = await self._fetchrow(
            "commit",
            self._sql_commit,
            type,
            key,
            float(ttl),
            token if token is not None else self._token(),
            bytes(result),
            self._now(),
            token,
        )
        return row is not None

    async def release(self, type: str, key: str, token: str | None) -> bool:
        """Drop a live, not committed entry (``token``, when given, must match)."""
        row = await self._fetchrow(
            "release",
            f"DELETE FROM {self._p}dedup WHERE type = $1 AND key = $2"
            f" AND expires_at > {_NOW.format('$3')} AND state <> 2"
            " AND ($4::text IS NULL OR token = $4) RETURNING 1",
            type,
            key,
            self._now(),
            token,
        )
        return row is not None

    async def forget(self, type: str, key: str) -> bool:
        """Drop the entry whatever its state; whether a live one was dropped."""
        row = await self._fetchrow(
            "forget",
            f"DELETE FROM {self._p}dedup WHERE type = $1 AND key = $2"
            f" RETURNING expires_at > {_NOW.format('$3')} AS live",
            type,
            key,
            self._now(),
        )
        return bool(row is not None and row["live"])

    async def clear(self, type: str | None) -> int:
        """Drop every entry of ``type`` (or all); how many rows were deleted."""
        row = await self._fetchrow(
            "clear",
            f"WITH d AS (DELETE FROM {self._p}dedup WHERE $1::text IS NULL OR type = $1"
            " RETURNING 1) SELECT count(*) AS n FROM d",
            type,
        )
        return int(row["n"])

    async def sweep(self) -> int:
        """Delete expired rows now, in batches that skip rows a claim holds; how many."""
        total = 0
        sql = (
            f"WITH gone AS (DELETE FROM {self._p}dedup WHERE (type, key) IN ("
            f"SELECT type, key FROM {self._p}dedup WHERE expires_at <= {_NOW.format('$1')}"
            " LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) AS n FROM gone"
        )
        while True:
            row = await self._fetchrow("sweep", sql, self._now(), self._sweep_batch)
            deleted = int(row["n"])
            total += deleted
            if deleted < self._sweep_batch:
                return total

    async def aclose(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warn_aclose(self)
        await self.close()

    async def close(self) -> None:
        """Stop the sweep and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        await cancel_and_wait(self._sweeper)
        if self._pool is not None:
            await self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresDedupBackend(prefix={self._p!r})"
