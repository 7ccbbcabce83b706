"""What the PostgreSQL backends share: the driver, the pool, the schema and its migrations.

Needs the ``[postgres]`` extra (``pip install 'fokha-integration[postgres]'``,
which installs asyncpg); this module imports ``asyncpg`` and only the PostgreSQL
backends import this module.

The schema is versioned: :data:`MIGRATIONS` lists every step, each applied once
and recorded in ``<prefix>schema_version``. :func:`migrate` runs the missing steps
in one transaction under a transaction-level advisory lock (keyed by the prefix),
so two processes migrating at once are safe: the second waits for the first and
then finds nothing left to do. ``fokha db migrate --dsn ...`` calls it; the
backends call it on first use unless told not to (``migrate=False``).

Why asyncpg and not psycopg 3: on this library's own statements (a claim upsert
per round trip; a ``SKIP LOCKED`` lease of 100 rows and a batched ack) asyncpg did
1.3x the claims and 1.2x the fetched-and-acknowledged rows per second of psycopg 3
in the same run (``benchmarks/bench_postgres_drivers.py``; figures in
docs/postgres.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import _validate as v
from .errors import (
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    map_backend_errors,
    translate_backend_error,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the PostgreSQL backends need the 'postgres' extra: "
        "pip install 'fokha-integration[postgres]'"
    ) from exc

__all__ = [
    "MIGRATIONS",
    "ConnectionPool",
    "PostgresPool",
    "check_prefix",
    "connect",
    "migrate",
    "schema_version",
]

# A (deadline, task) entry for a connection the watchdog no longer tracks.
_IDLE = (0.0, None)

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def check_prefix(prefix: object) -> str:
    """A table prefix: lower-case letters, digits and ``_``, at most 40 characters.

    It is pasted into identifiers, so nothing else is allowed (no quoting games).
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError("prefix", "must match [a-z_][a-z0-9_]{0,39}", prefix)
    return prefix


@dataclass(frozen=True, slots=True)
class PostgresPool:
    """Bounds and timeouts of the connection pool a PostgreSQL backend opens.

    ``min_size``/``max_size`` bound the pooled connections; ``connect_timeout`` bounds
    opening one, ``acquire_timeout`` the wait for a free one and ``command_timeout``
    every statement (the migration on first use: as a whole). A timeout raises
    :class:`~fokha_integration.errors.BackendUnavailableError`; a statement past
    ``command_timeout`` is also cancelled on the server (a cancel request).
    ``max_idle`` closes connections unused that long (seconds).
    """

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 10.0
    acquire_timeout: float = 10.0
    command_timeout: float = 30.0
    max_idle: float = 300.0

    def __post_init__(self) -> None:
        v.integer("min_size", self.min_size, minimum=0, maximum=1000)
        v.integer("max_size", self.max_size, minimum=1, maximum=1000)
        if self.min_size > self.max_size:
            raise ConfigError("min_size", "must be <= max_size", self.min_size)
        v.positive("connect_timeout", self.connect_timeout)
        v.positive("acquire_timeout", self.acquire_timeout)
        v.positive("command_timeout", self.command_timeout)
        v.positive("max_idle", self.max_idle)


async def connect(
    dsn: str,
    *,
    timeout: float,
    command_timeout: float | None = None,
    statement_timer: bool = True,
) -> Any:
    """One asyncpg connection; ``timeout`` bounds connecting, ``command_timeout``
    (default: ``timeout``) every statement. ``statement_timer=False``: no
    per-statement timer (the caller bounds statements itself, as
    :class:`ConnectionPool` does)."""
    limit = timeout if command_timeout is None else command_timeout
    with map_backend_errors("postgres", "connect"):
        return await asyncpg.connect(
            dsn, timeout=timeout, command_timeout=limit if statement_timer else None
        )


class ConnectionPool:
    """A bounded pool of asyncpg connections, the backends' own.

    Why not ``asyncpg.Pool``: its release runs in a task of its own (``shield``) and
    resets the session, and its acquire with a timeout in another (``wait_for``);
    on a claim, one round trip, that overhead halved the claims per second
    (benchmarks/bench_dedup.py). Here a free connection is handed out and taken back
    without a task or a query. Bounds: at most ``max_size`` connections, ``min_size``
    opened by :meth:`open`; waiting for one is bounded by ``acquire_timeout``,
    opening one by ``connect_timeout``; a connection idle longer than ``max_idle``
    (counted from the start of its last statement) is closed when next seen.

    Statements are bounded by ``command_timeout`` with one watchdog timer for the
    whole pool, not asyncpg's timer per statement (which cost a claim about a fifth
    of its client time: a timer handle made, scheduled and cancelled each time).
    Each statement records its deadline; the watchdog sleeps until the oldest one,
    and cancels the task of a statement still running then. asyncpg answers that
    cancellation by sending the server a cancel request, and the caller gets
    :class:`~fokha_integration.errors.BackendUnavailableError` (a timeout), as with
    asyncpg's own timer. A :meth:`lease` block is bounded as a whole.

    A connection is not reused when the block using it raised anything but a server
    error, or left a transaction open; it is closed in the background, gracefully
    (bounded by ``connect_timeout``), so that a cancel request asyncpg started for
    an interrupted statement still reaches the server.
    """

    def __init__(self, dsn: str, limits: PostgresPool) -> None:
        self._dsn = dsn
        self.limits = limits
        self._free: deque[tuple[Any, float]] = deque()  # (connection, released at)
        # Waiters get a connection, or None: "a slot is free, open one yourself".
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._size = 0  # connections open or being opened, free or lent
        self._closed = False
        # Statements running: connection -> (deadline, task), oldest first (the
        # deadline is start + command_timeout, so insertion order is deadline order).
        self._running: dict[Any, tuple[float, asyncio.Task[Any] | None]] = {}
        self._overdue: set[Any] = set()  # cancelled by the watchdog, not yet seen
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._stmts: dict[Any, dict[str, Any]] = {}  # connection -> sql -> prepared
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Open ``min_size`` connections (at least one: fails fast when unreachable)."""
        conns = [await self._connect() for _ in range(max(1, self.limits.min_size))]
        for conn in conns:
            self.release(conn)

    async def _connect(self) -> Any:
        self._loop = asyncio.get_running_loop()  # the loop the connections belong to
        self._size += 1
        try:
            return await connect(
                self._dsn, timeout=self.limits.connect_timeout, statement_timer=False
            )
        except BaseException:
            self._size -= 1
            self._wake_one(None)
            raise

    def _take_free(self) -> Any:
        """A free connection at once, or ``None`` (closed pool: ClosedError)."""
        if self._closed:
            raise ClosedError("the PostgreSQL connection pool is closed")
        now = time.monotonic()
        while self._free:
            conn, since = self._free.pop()  # the most recently used one
            if not conn.is_closed() and now - since < self.limits.max_idle:
                return conn
            self._drop(conn)
        return None

    async def acquire(self) -> Any:
        """A connection, waiting at most ``acquire_timeout`` for one to be free."""
        conn = self._take_free()
        if conn is not None:
            return conn
        if self._size < self.limits.max_size:
            return await self._connect()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            conn = await asyncio.wait_for(fut, self.limits.acquire_timeout)
        except BaseException as exc:
            # A connection handed over just before the wait ended (cancelled or timed
            # out in the same loop turn; Python >= 3.12 raises then) is not ours to
            # drop on the floor: it goes to the next waiter or back to the free list.
            if fut.done() and not fut.cancelled():
                handed = fut.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake_one(None)  # the free slot was handed over: pass it on
            if isinstance(exc, asyncio.TimeoutError):
                raise BackendUnavailableError(
                    "postgres",
                    f"no free connection within {self.limits.acquire_timeout:g}s"
                    f" (max_size={self.limits.max_size})",
                ) from None
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
        return conn if conn is not None else await self._connect()

    def release(self, conn: Any, *, reuse: bool = True) -> None:
        """Take ``conn`` back (``reuse=False``: close it instead)."""
        if not reuse or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
        elif not self._wake_one(conn):
            self._free.append((conn, time.monotonic()))

    def _wake_one(self, conn: Any) -> bool:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    def _drop(self, conn: Any) -> None:
        self._size -= 1
        self._stmts.pop(conn, None)
        if not conn.is_closed():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                conn.terminate()
            else:
                # Gracefully, in the background: close() first waits for a cancel
                # request asyncpg started (an interrupted statement) to be sent and
                # answered; terminate() would drop that request unsent.
                task = loop.create_task(self._close_one(conn))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._wake_one(None)

    async def _close_one(self, conn: Any) -> None:
        try:
            await conn.close(timeout=self.limits.connect_timeout)
        except (Exception, asyncio.CancelledError):
            conn.terminate()

    # -- the statement watchdog -----------------------------------------------

    def watch(self, conn: Any) -> None:
        """Record that a statement (or a lease block) starts on ``conn`` now: the
        watchdog cancels its task at ``command_timeout``."""
        deadline = time.monotonic() + self.limits.command_timeout
        # current_task() without its loop argument asks for the running loop, which
        # costs a getpid() system call on every statement.
        self._running[conn] = (deadline, asyncio.current_task(self._loop))
        if self._watchdog is None:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        self._watchdog = asyncio.get_running_loop().call_at(deadline, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        running = self._running
        while running:
            conn = next(iter(running))
            deadline, task = running[conn]
            if deadline > now:
                self._watchdog = asyncio.get_running_loop().call_at(deadline, self._watch)
                return
            del running[conn]
            if task is not None and not task.done():
                self._overdue.add(conn)
                task.cancel()

    def unwatch(self, conn: Any, exc: BaseException | None, what: str) -> None:
        """The statement (or lease block) on ``conn`` ended, with ``exc``; raises the
        timeout error when the watchdog cancelled it."""
        self._running.pop(conn, None)
        if conn in self._overdue:
            self._overdue.discard(conn)
            # Python >= 3.11 counts cancellations: a cancel from elsewhere at the same
            # time still wins (3.10 cannot tell them apart).
            uncancel = getattr(asyncio.current_task(), "uncancel", None)
            if isinstance(exc, asyncio.CancelledError) and (uncancel is None or uncancel() == 0):
                raise translate_backend_error(
                    "postgres",
                    asyncio.TimeoutError(
                        f"no answer within command_timeout={self.limits.command_timeout:g}s"
                    ),
                    what,
                ) from None

    # -- statements -----------------------------------------------------------

    def lease(self) -> _Lease:
        """``async with pool.lease() as conn:`` one connection for one block."""
        return _Lease(self)

    def checkout(self) -> Any:
        """A free connection with its statement's deadline recorded, or ``None``
        (then :meth:`lend` waits for one). For one statement, then :meth:`checkin`
        (it succeeded) or :meth:`failed` (it raised): the hot path of a caller that
        runs the statement itself, without a coroutine layer of the pool's."""
        conn = self._take_free()
        if conn is not None:
            self.watch(conn)
        return conn

    async def lend(self, what: str) -> Any:
        """:meth:`checkout`, waiting (bounded) for a connection when none is free."""
        conn = await self._lend(what)
        self.watch(conn)
        return conn

    def checkin(self, conn: Any) -> None:
        """Take ``conn`` back after its statement succeeded."""
        deadline, _ = self._running.pop(conn, _IDLE)
        if self._closed or conn.is_in_transaction() or self._waiters:
            self.release(conn)
        else:
            # The statement started command_timeout before its deadline: "released
            # at" for the idle bound without reading the clock again.
            self._free.append((conn, deadline - self.limits.command_timeout))

    def failed(self, conn: Any, exc: BaseException, what: str) -> bool:
        """Take ``conn`` back after its statement raised ``exc``. True: the statement
        was a stale :meth:`prepared` one (the schema or a type changed under it) and
        did not run; run it again (e.g. with :meth:`fetchrow`). Else raises the library's
        error for ``exc``, or returns False: re-raise ``exc`` then."""
        if isinstance(exc, (asyncpg.InvalidCachedStatementError, asyncpg.OutdatedSchemaCacheError)):
            self._stmts.pop(conn, None)
            self._failed(conn, exc, what, raising=False)
            return True
        self._failed(conn, exc, what)
        return False

    def prepared(self, conn: Any, sql: str) -> Any:
        """``conn``'s prepared statement for ``sql`` (from :meth:`prepare`), or ``None``.

        Running a prepared statement skips asyncpg's statement-cache lookup and its
        per-call bookkeeping: about 7k instructions of a claim's ~100k on the client.
        """
        stmts = self._stmts.get(conn)
        return None if stmts is None else stmts.get(sql)

    async def prepare(self, conn: Any, sql: str) -> Any:
        """Prepare ``sql`` on ``conn`` (a checked-out connection) and keep it for
        :meth:`prepared` while the connection lives."""
        stmt = await conn.prepare(sql)
        self._stmts.setdefault(conn, {})[sql] = stmt
        return stmt

    async def fetchrow(self, what: str, sql: str, *args: Any) -> Any:
        """``sql``'s first row on a pooled connection; errors mapped (``what`` names it)."""
        conn = self.checkout() or await self.lend(what)
        try:
            row = await conn.fetchrow(sql, *args)
        except BaseException as exc:
            self._failed(conn, exc, what)
            raise
        self.checkin(conn)
        return row

    async def fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        """``sql``'s rows on a pooled connection; errors mapped (``what`` names it)."""
        conn = self.checkout() or await self.lend(what)
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
        except BaseException as exc:
            self._failed(conn, exc, what)
            raise
        self.checkin(conn)
        return rows

    async def execute(self, what: str, sql: str, *args: Any) -> None:
        """Run ``sql`` on a pooled connection; errors mapped (``what`` names it)."""
        conn = self.checkout() or await self.lend(what)
        try:
            await conn.execute(sql, *args)
        except BaseException as exc:
            self._failed(conn, exc, what)
            raise
        self.checkin(conn)

    async def _lend(self, what: str) -> Any:
        # The slow way, when no connection is free at once (the common case takes one
        # from _take_free without a coroutine or an error-mapping block).
        with map_backend_errors("postgres", what):
            return await self.acquire()

    def _failed(self, conn: Any, exc: BaseException, what: str, *, raising: bool = True) -> None:
        # A server error leaves the connection usable; anything else (a cancellation
        # mid-statement, a lost link, a timeout) may not: it is not reused.
        self.release(conn, reuse=isinstance(exc, asyncpg.PostgresError))
        self.unwatch(conn, exc, what)
        if not raising:
            return
        mapped = translate_backend_error("postgres", exc, what)
        if mapped is not exc:
            raise mapped from exc

    async def close(self) -> None:
        """Close the free connections; lent ones are closed when given back."""
        self._closed = True
        if self._watchdog is not None and not self._running:
            self._watchdog.cancel()
            self._watchdog = None
        while self._free:
            conn, _ = self._free.pop()
            self._size -= 1
            with contextlib.suppress(Exception):
                await conn.close(timeout=self.limits.connect_timeout)
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(ClosedError("the PostgreSQL connection pool is closed"))
        self._waiters.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class _Lease:
    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._pool.acquire()
        self._pool.watch(self._conn)
        return self._conn

    async def __aexit__(self, kind: object, exc: object, tb: object) -> None:
        conn, self._conn = self._conn, None
        # As in ConnectionPool._failed: only a server error leaves it reusable.
        reuse = exc is None or isinstance(exc, asyncpg.PostgresError)
        self._pool.release(conn, reuse=reuse)
        self._pool.unwatch(conn, exc if isinstance(exc, BaseException) else None, "lease")


# Each step: (version, what it does, SQL with {p} for the prefix). Never edit a
# released step: add a new one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "dedup entries",
        """
        CREATE TABLE {p}dedup (
            type        text NOT NULL,
            key         text NOT NULL,
            first_seen  float8 NOT NULL,
            expires_at  float8 NOT NULL,
            state       smallint NOT NULL,
            fingerprint text,
            token       text NOT NULL,
            result      bytea,
            PRIMARY KEY (type, key)
        );
        CREATE INDEX {p}dedup_expiry ON {p}dedup (expires_at);
        """,
    ),
    (
        2,
        "outbox: envelopes, pending rows per sink, owners' leases, dead letters",
        """
        CREATE TABLE {p}outbox_sinks (name text PRIMARY KEY);
        CREATE TABLE {p}outbox (
            seq         bigserial PRIMARY KEY,
            id          text NOT NULL UNIQUE,
            okey        text NOT NULL,
            data        text NOT NULL,
            enqueued_at float8 NOT NULL
        );
        CREATE TABLE {p}outbox_pending (
            sink        text NOT NULL,
            seq         bigint NOT NULL,
            okey        text NOT NULL,
            enqueued_at float8 NOT NULL,
            owner       text,
            held        boolean NOT NULL DEFAULT false,
            PRIMARY KEY (sink, seq)
        );
        CREATE INDEX {p}outbox_pending_key ON {p}outbox_pending (sink, okey, seq);
        CREATE INDEX {p}outbox_pending_owner ON {p}outbox_pending (owner)
            WHERE owner IS NOT NULL;
        CREATE TABLE {p}outbox_owners (
            name        text PRIMARY KEY,
            lease_until timestamptz NOT NULL
        );
        CREATE TABLE {p}outbox_dead (
            ref         bigserial PRIMARY KEY,
            sink        text NOT NULL,
            seq         bigint NOT NULL,
            data        text NOT NULL
        );
        CREATE INDEX {p}outbox_dead_seq ON {p}outbox_dead (seq);
        """,
    ),
)


def _lock_id(prefix: str) -> int:
    """A stable signed 64-bit advisory lock key for migrating ``prefix``'s tables."""
    digest = hashlib.sha256(f"fokha-migrate:{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def schema_version(conn: Any, prefix: str) -> int:
    """The highest migration applied to ``prefix``'s tables (0: none)."""
    check_prefix(prefix)
    with map_backend_errors("postgres", "schema_version"):
        table = f"{prefix}schema_version"
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        if not exists:
            return 0
        found = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {prefix}schema_version")
        return int(found)


async def migrate(conn: Any, prefix: str = "fokha_") -> list[int]:
    """Apply the missing migrations on ``conn``; the versions applied now (maybe none).

    One transaction under an advisory lock: concurrent callers are serialised and
    each step is applied exactly once. A database migrated by a newer release (a
    version this one does not know) is refused with :class:`ConfigError`.
    """
    check_prefix(prefix)
    applied: list[int] = []
    with map_backend_errors("postgres", "migrate"):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_id(prefix))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {prefix}schema_version ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = int(
                await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {prefix}schema_version")
            )
            newest = MIGRATIONS[-1][0]
            if current > newest:
                raise ConfigError(
                    "prefix",
                    f"schema version {current} is newer than this release knows ({newest})",
                    prefix,
                )
            for version, name, sql in MIGRATIONS:
                if version <= current:
                    continue
                await conn.execute(sql.format(p=prefix))
                await conn.execute(
                    f"INSERT INTO {prefix}schema_version (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
                applied.append(version)
    return applied
