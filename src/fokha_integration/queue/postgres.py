"""The PostgreSQL outbox store: several delivering processes on several hosts, one database.

Needs the ``[postgres]`` extra (asyncpg). Tables (``prefix`` defaults to
``fokha_``; ``fokha db migrate`` creates them): ``outbox_sinks`` (registered sink
names), ``outbox`` (one row per envelope; its ``id`` is UNIQUE), ``outbox_pending``
(one row per envelope and sink still to deliver), ``outbox_owners`` (one row per
live store object and its lease), ``outbox_dead`` (dead letters).

* **Append** inserts the envelope and one pending row per registered sink in one
  statement, and ``pg_notify`` s the store's channel (delivered at commit). Appends
  made in one event-loop turn share that statement. :func:`publish_in_transaction`
  runs the same statement on the caller's own connection, inside the caller's
  transaction: nothing is delivered unless it commits, and a repeated envelope id
  is a no-op (``ON CONFLICT (id) DO NOTHING`` on the unique constraint).
* **Leases.** A fetch takes pending rows with ``FOR UPDATE SKIP LOCKED`` (two
  processes never take the same row) and marks them with this store object's
  owner name. The owner's lease is one row in ``outbox_owners`` that a background
  task renews every ``lease / 3`` seconds; rows of an owner whose lease ran out (a
  killed process) are taken over by the next fetch of any process. A stable
  ``consumer`` name lets a restarted process take its own rows back at once.
* **Per-key order across processes.** A fetch hands out a row only if every older
  pending row of the same order key (for that sink) is already held by this same
  owner. So at any moment one process delivers a given key of a given sink, in
  append order, and the key moves to another process only once the rows before
  it are acknowledged or their owner is dead. Cost: one index probe on
  ``(sink, okey, seq)`` per candidate row in the fetch statement, and a key with a
  backlog is delivered by one process at a time (parallelism is across keys).
* **Wake-up.** Each store object LISTENs on the channel; an idle fetch waits up
  to ``idle_wait`` seconds for a notification before answering "nothing", so new
  entries are fetched at once. When the listening connection is down, fetch
  answers at once and the queue's ``poll_interval`` polling is the fallback.
* **Retention.** Delivered envelope rows are kept ``retention`` seconds (the window
  in which a repeated id is still refused), then deleted in batches; dead letters
  are kept until replayed. See docs/postgres.md for sizing and vacuum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _validate as v
from .._aio import cancel_and_wait
from .._postgres import ConnectionPool, PostgresPool, check_prefix, connect, migrate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ClosedError, ConfigError, ValidationError, map_backend_errors
from ..models import Envelope, Model
from ._queue import SignalQueue, default_order_key
from ._store import EnvelopeCache, TurnBatch
from ._types import DeadLetter, OutboxEntry

__all__ = ["PostgresOutboxConfig", "PostgresOutboxStore", "publish_in_transaction"]

logger = logging.getLogger("fokha_integration.queue.postgres")

_PARSE_CACHE = 8192  # envelopes parsed once for every sink's copy
_MAX_BATCH = 1024  # appends or acks sent in one statement
_ACKS_IN_FLIGHT = 4  # acknowledging statements at once (the pool has max_size)


@dataclass(frozen=True, slots=True)
class PostgresOutboxConfig:
    """The delivery knobs of a :class:`PostgresOutboxStore`.

    ``consumer`` names this process's leases (default: host-pid-random; a stable
    name lets a restarted process take its rows back without waiting for its old
    lease to run out; it must be unique among live processes). ``lease``: seconds
    after the last renewal before a dead owner's rows are taken over. ``listen``:
    LISTEN/NOTIFY wake-up on (else polling only). ``idle_wait``: how long an idle
    fetch waits for a notification. ``retention``: seconds a delivered envelope
    row (and so its id's dedup) is kept. ``max_pending``: bound on each sink's
    backlog (checked every 1,024 appends; past it appends raise
    :class:`BackendError`). ``sweep_interval``: pause between retention sweeps.
    """

    consumer: str | None = None
    lease: float = 30.0
    listen: bool = True
    idle_wait: float = 1.0
    retention: float = 3600.0
    max_pending: int = 1_000_000
    sweep_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.consumer is not None:
            v.string("consumer", self.consumer, max_length=200)
        v.positive("lease", self.lease, maximum=86_400)
        v.boolean("listen", self.listen)
        v.non_negative("idle_wait", self.idle_wait, maximum=60)
        v.non_negative("retention", self.retention)
        v.integer("max_pending", self.max_pending, minimum=1)
        v.positive("sweep_interval", self.sweep_interval)


def _append_sql(p: str) -> str:
    """Insert envelopes ($1..$4 arrays) for every registered sink; notify channel $5."""
    return f"""
WITH s AS (SELECT name FROM {p}outbox_sinks),
o AS (
    INSERT INTO {p}outbox (id, okey, data, enqueued_at)
    SELECT u.id, u.okey, u.data, u.t
    FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])
        WITH ORDINALITY AS u(id, okey, data, t, i)
    WHERE EXISTS (SELECT 1 FROM s)
    ORDER BY u.i
    ON CONFLICT (id) DO NOTHING
    RETURNING seq, id, okey, enqueued_at
),
pend AS (
    INSERT INTO {p}outbox_pending (sink, seq, okey, enqueued_at)
    SELECT s.name, o.seq, o.okey, o.enqueued_at FROM o CROSS JOIN s
),
n AS MATERIALIZED (SELECT pg_notify($5, '') FROM (SELECT 1 FROM o LIMIT 1) x)
SELECT (SELECT count(*) FROM s) AS sinks,
       (SELECT count(*) FROM n) AS notified,
       (SELECT array_agg(id ORDER BY seq) FROM o) AS ids,
       (SELECT array_agg(seq ORDER BY seq) FROM o) AS seqs
"""


def _fetch_sql(p: str) -> str:
    """Lease up to $3 rows of sink $1 for owner $2 (see the module docstring).

    Written so that every step is an index probe whatever the planner's statistics
    say (a queue table's change faster than ANALYZE runs): the candidates walk the
    primary key (sink, seq) in order; the per-key check is a LIMIT 1 probe of
    (sink, okey, seq) per candidate (a LIMIT keeps it from becoming a hash join over
    the whole backlog); the update finds its rows by primary key.
    """
    return f"""
WITH cand AS (
    SELECT c.seq, c.okey, c.owner AS was FROM {p}outbox_pending c
    WHERE c.sink = $1 AND (
        c.owner IS NULL
        OR (c.owner = $2 AND NOT c.held)
        OR NOT EXISTS (SELECT 1 FROM {p}outbox_owners w
                       WHERE w.name = c.owner AND w.lease_until >= clock_timestamp()))
    ORDER BY c.sink, c.seq LIMIT $3
    FOR UPDATE OF c SKIP LOCKED
),
ok AS (
    SELECT c.seq, c.was FROM cand c
    WHERE (SELECT 1 FROM {p}outbox_pending q
           WHERE q.sink = $1 AND q.okey = c.okey AND q.seq < c.seq
             AND NOT (q.owner IS NOT DISTINCT FROM $2 AND q.held)
             AND q.seq <> ALL (ARRAY(SELECT seq FROM cand))
           LIMIT 1) IS NULL
)
UPDATE {p}outbox_pending t SET owner = $2, held = true
FROM ok WHERE t.sink = $1 AND t.seq = ok.seq
RETURNING t.seq, t.enqueued_at, ok.was, (SELECT o.data FROM {p}outbox o WHERE o.seq = t.seq) AS data
"""


def _replay_sql(p: str) -> str:
    return f"""
WITH r AS (
    DELETE FROM {p}outbox_dead d
    WHERE ($1::text IS NULL OR d.sink = $1) AND ($2::int8[] IS NULL OR d.ref = ANY($2))
    RETURNING d.sink, d.seq
),
ins AS (
    INSERT INTO {p}outbox_pending (sink, seq, okey, enqueued_at)
    SELECT r.sink, r.seq, o.okey, $3 FROM r JOIN {p}outbox o ON o.seq = r.seq
    ON CONFLICT DO NOTHING
),
n AS MATERIALIZED (SELECT pg_notify($4, '') FROM (SELECT 1 FROM r LIMIT 1) x)
SELECT (SELECT count(*) FROM r) AS replayed, (SELECT count(*) FROM n) AS notified
"""


def _sweep_sql(p: str) -> str:
    """Delete up to $2 delivered envelope rows enqueued before $1 (no sink, no dead letter)."""
    return f"""
WITH low AS (
    SELECT coalesce(
        (SELECT min(m) FROM (SELECT (SELECT min(seq) FROM {p}outbox_pending x
                                     WHERE x.sink = s.name) AS m
                             FROM {p}outbox_sinks s) y),
        (SELECT max(seq) + 1 FROM {p}outbox)) AS seq
),
gone AS (
    DELETE FROM {p}outbox WHERE seq IN (
        SELECT o.seq FROM {p}outbox o, low
        WHERE o.seq < low.seq AND o.enqueued_at < $1
          AND NOT EXISTS (SELECT 1 FROM {p}outbox_dead d WHERE d.seq = o.seq)
        ORDER BY o.seq LIMIT $2)
    RETURNING 1
)
SELECT count(*) AS n FROM gone
"""


async def publish_in_transaction(
    conn: Any,
    item: Envelope | Model,
    *,
    key: str | None = None,
    prefix: str = "fokha_",
    order_key: Callable[[Envelope], str] = default_order_key,
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Enqueue ``item`` inside the caller's open transaction on ``conn`` (asyncpg).

    Nothing is delivered unless that transaction commits; a rollback (or a crash
    before the commit) leaves no trace. Returns ``False`` when an envelope with the
    same id is already in the outbox (the unique constraint, in the same
    transaction: a retried transaction does not publish twice while the row is
    retained). ``item`` and ``key`` are as for :meth:`SignalQueue.publish`. Raises
    :class:`ConfigError` when no sink is registered (the transaction stays usable).
    """
    p = check_prefix(prefix)
    if not conn.is_in_transaction():
        raise ValidationError("conn", "must be inside an open transaction", None)
    envelope = SignalQueue.to_envelope(item, key=key)
    with map_backend_errors("postgres", "publish_in_transaction"):
        row = await conn.fetchrow(
            _append_sql(p),
            [envelope.id],
            [order_key(envelope)],
            [envelope.to_json()],
            [clock.time()],
            f"{p}outbox",
        )
    if not row["sinks"]:
        raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
    return bool(row["ids"])


class PostgresOutboxStore:
    """An :class:`~fokha_integration.queue.OutboxStore` on PostgreSQL (module docstring).

    ``dsn`` is a libpq URL; ``limits`` bounds the connection pool the store opens.
    ``prefix`` starts every table name; ``migrate`` creates/upgrades the tables on
    :meth:`open`.
    ``order_key`` must be the queue's (default: the queue's default). ``config``:
    see :class:`PostgresOutboxConfig`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        limits: PostgresPool | None = None,
        prefix: str = "fokha_",
        migrate: bool = True,
        config: PostgresOutboxConfig | None = None,
        order_key: Callable[[Envelope], str] = default_order_key,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._dsn = v.string("dsn", dsn)
        self._pool: ConnectionPool | None = None
        self._limits = limits if limits is not None else PostgresPool()
        self._p = check_prefix(prefix)
        self._migrate = v.boolean("migrate", migrate)
        self._cfg = config if config is not None else PostgresOutboxConfig()
        self._order_key = order_key
        self._clock = clock
        self.consumer = self._cfg.consumer or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        """The owner name of this store object's leases."""
        self._channel = f"{self._p}outbox"
        self._sql = {
            "append": _append_sql(self._p),
            "fetch": _fetch_sql(self._p),
            "replay": _replay_sql(self._p),
            "sweep": _sweep_sql(self._p),
        }
        self._open = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._gen = 0  # notifications seen
        self._waiters: set[asyncio.Future[None]] = set()
        self._appends = 0
        self._appends_batch: TurnBatch[tuple[Envelope, asyncio.Future[bool]]]
        self._appends_batch = TurnBatch(self._flush_appends, _MAX_BATCH)
        self._acks_batch: TurnBatch[tuple[OutboxEntry, asyncio.Future[None]]]
        self._acks_batch = TurnBatch(self._queue_acks, _MAX_BATCH)
        self._acks_ready: list[tuple[OutboxEntry, asyncio.Future[None]]] = []
        self._acking = 0  # acknowledging statements in flight
        self._parsed: EnvelopeCache[int] = EnvelopeCache(_PARSE_CACHE)
        self.taken_over = 0
        """Rows this object leased that another owner had held (its lease ran out)."""

    # -- plumbing -------------------------------------------------------------

    def _pooled(self) -> ConnectionPool:
        if not self._open or self._pool is None:
            raise ClosedError("the PostgreSQL outbox store is not open")
        return self._pool

    async def _fetchrow(self, what: str, sql: str, *args: Any) -> Any:
        return await self._pooled().fetchrow(what, sql, *args)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        return await self._pooled().fetch(what, sql, *args)

    async def _execute(self, what: str, sql: str, *args: Any) -> None:
        await self._pooled().execute(what, sql, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ------------------------------------------------------------

    async def open(self, sinks: Sequence[str]) -> None:
        """Connect (migrating when asked), register ``sinks``, start the lease keeper."""
        names = [v.string("sinks", name, max_length=200) for name in sinks]
        if not self._open:
            pool = ConnectionPool(self._dsn, self._limits)
            await pool.open()
            self._pool = pool
            self._open = True
            try:
                await self._start()
            except BaseException:
                self._open, self._pool = False, None
                await pool.close()
                raise
        if names:
            await self._execute(
                "open",
                f"INSERT INTO {self._p}outbox_sinks (name) SELECT unnest($1::text[])"
                " ON CONFLICT DO NOTHING",
                names,
            )

    async def _start(self) -> None:
        if self._migrate:
            async with self._pooled().lease() as conn:
                await migrate(conn, self._p)
        await self._renew()
        # A restarted process with a stable name takes its own rows back at once.
        await self._execute(
            "open",
            f"UPDATE {self._p}outbox_pending SET held = false WHERE owner = $1",
            self.consumer,
        )
        if self._cfg.listen:
            await self._listen()
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep(), name=f"fokha-outbox-postgres-{self.consumer}"
        )

    async def registered_sinks(self) -> list[str]:
        """The sink names appends fan out to."""
        rows = await self._fetch("sinks", f"SELECT name FROM {self._p}outbox_sinks ORDER BY 1")
        return [r["name"] for r in rows]

    async def close(self) -> None:
        """Finish pending batches, give back this object's leases, close the pool."""
        if not self._open:
            return
        self._appends_batch.flush()
        self._acks_batch.flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._limits.command_timeout)
        await cancel_and_wait(self._keeper)
        self._keeper = None
        with contextlib.suppress(Exception):  # the rows' lease runs out anyway
            await self._execute(
                "close",
                f"UPDATE {self._p}outbox_pending SET owner = NULL, held = false WHERE owner = $1",
                self.consumer,
            )
            await self._execute(
                "close", f"DELETE FROM {self._p}outbox_owners WHERE name = $1", self.consumer
            )
        await self._unlisten()
        self._open = False
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _renew(self) -> None:
        await self._execute(
            "renew lease",
            f"INSERT INTO {self._p}outbox_owners (name, lease_until)"
            " VALUES ($1, clock_timestamp() + make_interval(secs => $2))"
            " ON CONFLICT (name) DO UPDATE SET lease_until = excluded.lease_until",
            self.consumer,
            self._cfg.lease,
        )

    async def _keep(self) -> None:
        """Renew the lease every lease/3 s; sweep old rows; re-LISTEN when the line drops."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self._cfg.sweep_interval
        while True:
            await asyncio.sleep(self._cfg.lease / 3)
            try:
                await self._renew()
                if self._cfg.listen and self._listener is None:
                    await self._listen()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self._cfg.sweep_interval
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("outbox %s: lease renewal or sweep failed", self._p, exc_info=True)

    async def _listen(self) -> None:
        try:
            conn = await connect(self._dsn, timeout=self._limits.connect_timeout)
            try:
                with map_backend_errors("postgres", "listen"):
                    await conn.add_listener(self._channel, self._notified)
                conn.add_termination_listener(self._lost)
            except BaseException:
                conn.terminate()
                raise
        except Exception:
            logger.warning("outbox %s: LISTEN failed; polling", self._p, exc_info=True)
            return
        self._listener = conn

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.close(timeout=self._limits.connect_timeout)

    def _lost(self, conn: Any) -> None:
        # The listening connection died: fall back to polling until _keep listens again.
        if conn is self._listener:
            self._listener = None
            self._wake()

    def _notified(self, *_: Any) -> None:
        self._gen += 1
        self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    # -- appends --------------------------------------------------------------

    async def append(self, envelope: Envelope) -> bool:
        """Insert ``envelope`` for every registered sink (appends of one loop turn together)."""
        if not self._open:
            raise ClosedError("the PostgreSQL outbox store is not open")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._appends_batch.add((envelope, fut))
        return await fut

    def _flush_appends(self, batch: list[tuple[Envelope, asyncio.Future[bool]]]) -> None:
        self._spawn(self._send_appends(batch))

    async def _send_appends(self, batch: list[tuple[Envelope, asyncio.Future[bool]]]) -> None:
        unique: dict[str, Envelope] = {}
        for envelope, _ in batch:
            unique.setdefault(envelope.id, envelope)
        envs = list(unique.values())
        now = self._clock.time()
        try:
            before, self._appends = self._appends, self._appends + len(envs)
            if before // _MAX_BATCH != self._appends // _MAX_BATCH:
                await self._check_bound()
            row = await self._fetchrow(
                "append",
                self._sql["append"],
                [e.id for e in envs],
                [self._order_key(e) for e in envs],
                [e.to_json() for e in envs],
                [now] * len(envs),
                self._channel,
            )
            if not row["sinks"]:
                raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc) if isinstance(exc, Exception) else fut.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        fresh = dict(zip(row["ids"] or [], row["seqs"] or [], strict=True))
        for envelope, fut in batch:
            seq = fresh.pop(envelope.id, None)  # a repeat in the batch finds it popped
            if seq is not None:
                self._parsed.put(seq, envelope)
            if not fut.done():
                fut.set_result(seq is not None)

    async def _check_bound(self) -> None:
        row = await self._fetchrow(
            "append",
            f"SELECT max(n) AS n FROM (SELECT count(*) AS n FROM {self._p}outbox_pending"
            " GROUP BY sink) c",
        )
        if row["n"] is not None and row["n"] >= self._cfg.max_pending:
            raise BackendError("postgres", "outbox is full (max_pending reached)")

    async def publish_in_transaction(
        self, conn: Any, item: Envelope | Model, *, key: str | None = None
    ) -> bool:
        """:func:`publish_in_transaction` with this store's prefix, order key and clock."""
        return await publish_in_transaction(
            conn, item, key=key, prefix=self._p, order_key=self._order_key, clock=self._clock
        )

    # -- deliveries -----------------------------------------------------------

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Lease up to ``limit`` entries of ``sink``, oldest first (waits up to
        ``idle_wait`` for a notification when there is none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.idle_wait
        while True:
            gen = self._gen
            rows = await self._fetch("fetch", self._sql["fetch"], sink, self.consumer, limit)
            if rows:
                rows.sort(key=lambda r: r["seq"])
                me = self.consumer
                self.taken_over += sum(1 for r in rows if r["was"] not in (None, me))
                return [
                    OutboxEntry(
                        sink,
                        str(r["seq"]),
                        self._parsed.parse(r["seq"], r["data"]),
                        r["enqueued_at"],
                    )
                    for r in rows
                ]
            if self._gen != gen:
                continue  # something was appended while we looked
            left = deadline - loop.time()
            if self._listener is None or left <= 0:
                return []
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            try:
                await asyncio.wait([fut], timeout=left)
            finally:
                self._waiters.discard(fut)
            if not self._open:
                raise ClosedError("the PostgreSQL outbox store is not open")

    async def ack(self, entry: OutboxEntry) -> None:
        """Delete the pending row.

        Group commit: the acknowledgements of one loop turn share a statement, and
        at most ``_ACKS_IN_FLIGHT`` such statements run at once; acknowledgements
        made while they all run wait and go together in the next one (each caller
        still gets its own answer). Under load the batches grow by themselves, and
        the pool keeps connections free for fetches and appends.
        """
        if not self._open:
            raise ClosedError("the PostgreSQL outbox store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks_batch.add((entry, fut))
        await fut

    def _queue_acks(self, batch: list[tuple[OutboxEntry, asyncio.Future[None]]]) -> None:
        self._acks_ready.extend(batch)
        if self._acking < _ACKS_IN_FLIGHT:
            self._acking += 1
            self._spawn(self._ack_pump())

    async def _ack_pump(self) -> None:
        try:
            while self._acks_ready:
                batch = self._acks_ready[:_MAX_BATCH]
                del self._acks_ready[:_MAX_BATCH]
                await self._send_acks(batch)
        finally:
            self._acking -= 1

    async def _send_acks(self, batch: list[tuple[OutboxEntry, asyncio.Future[None]]]) -> None:
        try:
            await self._execute(
                "ack",
                f"DELETE FROM {self._p}outbox_pending p USING unnest($1::text[], $2::int8[])"
                " AS u(sink, seq) WHERE p.sink = u.sink AND p.seq = u.seq",
                [e.sink for e, _ in batch],
                [int(e.ref) for e, _ in batch],
            )
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc) if isinstance(exc, Exception) else fut.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def release(self, entry: OutboxEntry) -> None:
        """Give the entry back to this owner: the next fetch hands it out again."""
        await self._execute(
            "release",
            f"UPDATE {self._p}outbox_pending SET held = false"
            " WHERE sink = $1 AND seq = $2 AND owner = $3",
            entry.sink,
            int(entry.ref),
            self.consumer,
        )

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Delete the pending row and insert the dead letter, in one statement."""
        await self._execute(
            "dead_letter",
            f"WITH d AS (DELETE FROM {self._p}outbox_pending WHERE sink = $1 AND seq = $2)"
            f" INSERT INTO {self._p}outbox_dead (sink, seq, data) VALUES ($1, $2, $3)",
            entry.sink,
            int(entry.ref),
            letter.to_json(),
        )

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters (of ``sink``, or of all sinks)."""
        rows = await self._fetch(
            "dead_letters",
            f"SELECT ref, data FROM {self._p}outbox_dead WHERE $1::text IS NULL OR sink = $1"
            " ORDER BY ref LIMIT $2",
            sink,
            limit,
        )
        return [DeadLetter.from_json(r["data"], ref=str(r["ref"])) for r in rows]

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """Move dead letters back to pending (the envelope row is still there)."""
        wanted = None if refs is None else [int(r) for r in refs if str(r).isdigit()]
        row = await self._fetchrow(
            "replay", self._sql["replay"], sink, wanted, self._clock.time(), self._channel
        )
        return int(row["replayed"])

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """Pending count and the oldest enqueue time."""
        row = await self._fetchrow(
            "stats",
            f"SELECT count(*) AS n, min(enqueued_at) AS t FROM {self._p}outbox_pending"
            " WHERE sink = $1",
            sink,
        )
        return int(row["n"]), (None if row["t"] is None else float(row["t"]))

    async def sweep(self, *, batch: int = 10_000) -> int:
        """Delete delivered envelope rows older than ``retention``; how many were deleted."""
        cutoff = self._clock.time() - self._cfg.retention
        total = 0
        while True:
            row = await self._fetchrow("sweep", self._sql["sweep"], cutoff, batch)
            total += int(row["n"])
            if int(row["n"]) < batch:
                return total

    def __repr__(self) -> str:
        return f"PostgresOutboxStore(prefix={self._p!r}, consumer={self.consumer!r})"
