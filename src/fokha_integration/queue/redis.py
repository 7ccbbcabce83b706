"""The Redis Streams outbox store: several delivering processes, on one host or many.

Needs the ``[redis]`` extra (``pip install 'fokha-integration[redis]'``); this module
imports ``redis.asyncio`` and nothing else in the library does.

Layout (``prefix`` defaults to ``fokha:queue``; the braces keep every key in one
cluster slot): ``{prefix}:sinks`` (a set of sink names), ``{prefix}:s:<sink>`` (one
stream per sink, read by the consumer group ``<sink>``: a consumer group per sink),
``{prefix}:dead`` (the dead-letter stream), ``{prefix}:id:<envelope id>`` (marks an
appended id for ``id_ttl`` seconds so a repeated append is a no-op), ``{prefix}:seq``
(the append counter, see "Rewinds" below).

An append adds the envelope to every registered sink's stream in one Lua script
(atomic). A delivering process reads new entries with ``XREADGROUP``, acknowledges
with ``XACK`` + ``XDEL`` (so streams hold only what is pending), and reclaims the
entries of crashed consumers with ``XAUTOCLAIM`` once they have been idle for
``reclaim_idle`` seconds. While it works on an entry it refreshes the entry's idle
time (``XCLAIM ... JUSTID``), so a slow but live consumer is not robbed.

Durability is what the server's persistence gives: ``appendonly yes`` with
``appendfsync always`` keeps every accepted envelope through a crash of the machine;
``everysec`` through a crash of the ``redis-server`` process only (see
docs/signal-queue.md). Run it with ``maxmemory-policy noeviction``.

Rewinds: a Redis restarted from an older state (an RDB snapshot, an AOF written
with ``appendfsync everysec`` that lost its last second, a failover to a replica
that lagged) has forgotten the appends and acknowledgements made after that
state. The append script numbers every envelope from a counter,
``{prefix}:seq``, and stores the number with each stream entry (field ``n``). This
store remembers the highest number it appended or read; a counter below it
means the history went back. It is checked with every append (the number the
script returns) and with every read of new entries (a ``GET`` of the counter
pipelined with the ``XREADGROUP``: no extra round trip); after a failed fetch
(Redis gone, or back from a restart) the next fetch reads the counter first, one
extra ``GET``. A rewind is logged as an
ERROR naming how many appends it went back and counted in :attr:`rewinds` and
:attr:`rewound`; this store then re-reads its pending entries at once (the
acknowledgements the snapshot undid are delivered again, and receivers dedup on
the envelope id), and the entries it holds that Redis no longer has are put back
when they are released or still held at :meth:`close` (which reads the counter
once more when it holds entries); after a rewind the sinks and their consumer
groups are registered again. Envelopes appended after the snapshot and never
fetched are gone: the log and counters are how you learn about them. A store
notices only a counter below a number it appended or read itself: a
delivering-only process cannot notice the loss of appends it never read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import (
    BackendError,
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    translate_backend_error,
)
from ..models import Envelope
from ._store import EnvelopeCache, TurnBatch
from ._types import DeadLetter, OutboxEntry

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisStreamsStore needs the 'redis' extra: pip install 'fokha-integration[redis]'"
    ) from exc

__all__ = ["RedisStreamsStore"]

logger = logging.getLogger("fokha_integration.queue.redis")

_PARSE_CACHE = 8192  # envelopes parsed once for every sink's copy of the same data
_MAX_BATCH = 512  # appends or acks sent in one pipeline

_APPEND = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) == false then
  return 0
end
local sinks = redis.call('SMEMBERS', KEYS[1])
if #sinks == 0 then
  redis.call('DEL', KEYS[2])
  return -2
end
for _, s in ipairs(sinks) do
  if redis.call('XLEN', ARGV[5] .. s) >= tonumber(ARGV[4]) then
    redis.call('DEL', KEYS[2])
    return -1
  end
end
local n = redis.call('INCR', KEYS[3])
for _, s in ipairs(sinks) do
  redis.call('XADD', ARGV[5] .. s, '*', 'd', ARGV[1], 't', ARGV[2], 'n', n)
end
return n
"""

# Puts back an entry Redis forgot in a rewind (see the module docstring).
_READD = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1], 't', ARGV[2], 'n', n)
return n
"""


def _translate(exc: BaseException) -> BaseException:
    """redis-py errors as the library's own, through the redis driver table."""
    return translate_backend_error("redis", exc)


def _fail_all(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    """Give every caller of a failed batch the error (or the cancellation)."""
    for fut in futures:
        if fut.done():
            continue
        if isinstance(exc, Exception):
            fut.set_exception(_translate(exc))
        else:
            fut.cancel()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Rewinds:
    """A store's watch on the outbox's append counter (see "Rewinds" in the module
    docstring): the highest number it appended or read, the rewinds it found, and
    the leased entries a rewind took from Redis. The store does the I/O; the
    operations that need Redis take the client, the call wrapper and the names."""

    def __init__(self, seq_key: str) -> None:
        self.seq_key = seq_key
        self.high = 0  # the highest append number this store appended or read
        self.era = 0  # rewinds seen: a check begun before the last one is stale
        self.check_leases = False  # a rewind happened: find the leased entries it took
        self.check_due = False  # a fetch failed: read the counter on the next one
        self.orphans: dict[str, set[str]] = {}  # sink -> refs Redis no longer has
        self.rewinds = 0
        self.rewound = 0

    def seen(self, number: int) -> None:
        """An append number this store appended or read."""
        if number > self.high:
            self.high = number

    def check(self, counter: int, high: int, era: int) -> bool:
        """Whether ``counter`` shows a new rewind (then it is counted and logged).

        ``high`` and ``era`` were read before the command that returned ``counter``
        was sent: every number in ``high`` was handed out by Redis before it, so a
        lower counter means Redis forgot appends. A check begun before a rewind that
        was already reported (an older ``era``) says nothing new.
        """
        if counter >= high or era != self.era:
            return False
        self.era += 1
        self.rewinds += 1
        self.rewound += high - counter
        self.high = counter
        self.check_leases = True
        logger.error(
            "Redis outbox %s: history went back %d append(s) (append counter %d, this store "
            "had seen %d): Redis restarted from an older snapshot or lost writes. Envelopes "
            "appended since then and not yet fetched are lost (publish them again from the "
            "system of record); entries acknowledged since then are delivered again "
            "(receivers dedup on the envelope id); rewind %d of this store",
            self.seq_key,
            high - counter,
            counter,
            high,
            self.rewinds,
        )
        return True

    async def put_back(
        self, do: Callable[[Any], Awaitable[Any]], readd: Any, stream: str, entry: OutboxEntry
    ) -> None:
        """Append ``entry`` (leased, lost in a rewind) to ``stream`` again: a new entry,
        the same envelope."""
        args = [entry.envelope.to_json(), repr(entry.enqueued_at)]
        self.seen(int(await do(readd(keys=[stream, self.seq_key], args=args))))
        self.forget(entry)

    def unsaved(self, held: list[OutboxEntry], exc: BaseException) -> None:
        """Log the envelopes a rewind took that could not be put back at close."""
        lost = sorted(e.envelope.id for e in held if self.is_orphan(e))
        logger.error(
            "Redis outbox %s: could not put back %d envelope(s) a rewind took from "
            "Redis and this store still held at close (%r): %s",
            self.seq_key,
            len(lost),
            exc,
            ", ".join(lost) if lost else "unknown (the lease check failed)",
        )

    def is_orphan(self, entry: OutboxEntry) -> bool:
        return entry.ref in self.orphans.get(entry.sink, ())

    def forget(self, entry: OutboxEntry) -> None:
        orphans = self.orphans.get(entry.sink)
        if orphans:
            orphans.discard(entry.ref)

    async def find_orphans(
        self,
        r: Any,
        do: Callable[[Any], Awaitable[Any]],
        stream: Callable[[str], str],
        leased: Mapping[str, Mapping[str, OutboxEntry]],
    ) -> None:
        """After a rewind: which leased entries Redis no longer has (put back later)."""
        sinks = [(sink, list(held)) for sink, held in leased.items() if held]
        if sinks:
            async with r.pipeline(transaction=False) as pipe:
                for sink, refs in sinks:
                    for ref in refs:
                        pipe.xrange(stream(sink), ref, ref)
                found = iter(await do(pipe.execute()))
            for sink, refs in sinks:
                held = leased.get(sink, {})
                for ref in refs:
                    if not next(found) and ref in held:
                        self.orphans.setdefault(sink, set()).add(ref)
        self.check_leases = False


async def _read_dead(
    r: Any, do: Callable[[Any], Awaitable[Any]], dead_key: str, sink: str | None, limit: int
) -> list[tuple[str, DeadLetter]]:
    """The oldest ``limit`` dead letters (of ``sink``, or all) with their refs."""
    out: list[tuple[str, DeadLetter]] = []
    start = "-"
    while len(out) < limit:
        batch = await do(r.xrange(dead_key, start, "+", count=500))
        if not batch:
            break
        for ident, fields in batch:
            ref = _text(ident)
            if sink is None or _text(fields.get(b"sink", b"")) == sink:
                out.append((ref, DeadLetter.from_json(fields[b"data"], ref=ref)))
                if len(out) >= limit:
                    break
        if len(batch) < 500:
            break
        start = "(" + _text(batch[-1][0])
    return out


async def _register(
    r: Any,
    do: Callable[[Any], Awaitable[Any]],
    sinks_key: str,
    stream: Callable[[str], str],
    names: Sequence[str],
) -> None:
    """Register the sinks ``names`` and create their consumer groups (existing ones are
    kept): at open, and again after a rewind (a Redis back empty has neither)."""
    if names:
        await do(r.sadd(sinks_key, *names))
    for name in names:
        try:
            await r.xgroup_create(stream(name), name, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _translate(exc) from exc
        except redis_errors.RedisError as exc:
            raise _translate(exc) from exc


async def _read_counter(r: Any, do: Callable[[Any], Awaitable[Any]], key: str) -> int:
    """The append counter, asked twice if need be: the first command on a pooled
    connection that a Redis restart broke fails."""
    try:
        return int(await do(r.get(key)) or 0)
    except BackendUnavailableError:
        return int(await do(r.get(key)) or 0)


class RedisStreamsStore:
    """An :class:`~fokha_integration.queue.OutboxStore` on Redis Streams.

    ``url`` is a ``redis://`` URL (or pass ``client``). ``consumer`` names this
    process in the consumer groups (default: host-pid-random; a stable name lets a
    restarted process take back its own pending entries at once, without waiting
    ``reclaim_idle``). ``max_pending`` bounds each sink's stream: past it an append
    raises :class:`BackendError`. ``timeout`` bounds every Redis call and the wait
    for one of the ``max_connections`` pooled connections.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        prefix: str = "fokha:queue",
        consumer: str | None = None,
        reclaim_idle: float = 30.0,
        id_ttl: float = 24 * 3600.0,
        max_pending: int = 1_000_000,
        timeout: float = 5.0,
        max_connections: int = 32,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._url = url
        self._max_connections = max_connections
        self._client: Any = client
        self._own_client = client is None
        base = "{" + prefix + "}"
        self._sinks_key = f"{base}:sinks"
        self._stream_prefix = f"{base}:s:"
        self._dead_key = f"{base}:dead"
        self._id_prefix = f"{base}:id:"
        self._seq_key = f"{base}:seq"
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        """This process's consumer name in every sink's group."""
        self._reclaim_ms = max(1, int(check.positive("reclaim_idle", reclaim_idle) * 1000))
        self._id_ttl_ms = max(1, int(check.positive("id_ttl", id_ttl) * 1000))
        self._max_pending = check.integer("max_pending", max_pending, minimum=1)
        self._timeout = check.positive("timeout", timeout)
        check.integer("max_connections", max_connections, minimum=1)
        self._clock = clock
        self._leased: dict[str, dict[str, OutboxEntry]] = {}
        self._reread: dict[str, bool] = {}
        self._last_reclaim: dict[str, float] = {}
        self._last_refresh: dict[str, float] = {}
        self._claim_cursor: dict[str, str] = {}
        self._append: Any = None
        self._readd: Any = None
        self._rw = _Rewinds(self._seq_key)
        self._pool: Any = None
        self._open = False
        # Every sink's stream holds the same text: parse (and validate) it once.
        self._parsed: EnvelopeCache[bytes | str] = EnvelopeCache(_PARSE_CACHE)
        # Appends and acks made in one loop turn share one pipeline (one round trip).
        self._appends_batch: TurnBatch[tuple[list[Any], list[Any], asyncio.Future[Any]]]
        self._appends_batch = TurnBatch(self._flush_appends, _MAX_BATCH)
        self._acks_batch: TurnBatch[tuple[OutboxEntry, asyncio.Future[None]]]
        self._acks_batch = TurnBatch(self._flush_acks, _MAX_BATCH)
        self._flushes: set[asyncio.Task[None]] = set()
        self.reclaimed = 0
        """Entries this store took over from other (crashed) consumers with XAUTOCLAIM."""

    @property
    def rewinds(self) -> int:
        """Times this store found the outbox's history moved backwards (Redis restarted
        from an older snapshot, or lost writes): see the module docstring."""
        return self._rw.rewinds

    @property
    def rewound(self) -> int:
        """How far those rewinds went back below the numbers this store had seen,
        summed: a lower bound of the appends Redis forgot (it may have forgotten
        appends this store never saw)."""
        return self._rw.rewound

    def _stream(self, sink: str) -> str:
        return self._stream_prefix + sink

    async def _do(self, coro: Any) -> Any:
        try:
            return await coro
        except redis_errors.RedisError as exc:
            raise _translate(exc) from exc

    def _r(self) -> Any:
        if not self._open:
            raise ClosedError("the Redis outbox store is not open")
        return self._client

    async def open(self, sinks: Sequence[str]) -> None:
        """Connect, register ``sinks`` and create their consumer groups."""
        if self._client is None:
            # A blocking pool: many deliveries in flight wait for a connection
            # (at most ``timeout``) instead of failing with "too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._pool = pool
            self._own_client = True
        self._open = True
        r = self._client
        self._append = r.register_script(_APPEND)
        self._readd = r.register_script(_READD)
        names = list(sinks)
        await _register(r, self._do, self._sinks_key, self._stream, names)
        for name in names:
            self._leased.setdefault(name, {})
            self._reread[name] = True
            self._last_reclaim.setdefault(name, float("-inf"))
            self._last_refresh.setdefault(name, self._clock.monotonic())

    async def registered_sinks(self) -> list[str]:
        """The sink names appends fan out to."""
        names = await self._do(self._r().smembers(self._sinks_key))
        return sorted(_text(n) for n in names)

    async def close(self) -> None:
        """Close the connection (if this store made it); pending entries stay in Redis."""
        # Appends and acks already handed to a pipeline finish first (bounded).
        self._appends_batch.flush()
        self._acks_batch.flush()
        if self._flushes:
            await asyncio.wait(set(self._flushes), timeout=self._timeout)
        if self._open and self._client is not None:
            await self._put_back_orphans()
        self._open = False
        self._leased.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            if self._pool is not None:
                await self._pool.disconnect()
                self._pool = None
            self._client = None

    async def append(self, envelope: Envelope) -> bool:
        """Add the envelope to every registered sink's stream (one Lua script).

        Appends made in the same event-loop turn go to Redis in one pipeline; each
        script stays atomic and each caller gets its own answer.
        """
        self._r()
        keys = [self._sinks_key, self._id_prefix + envelope.id, self._seq_key]
        args = [
            envelope.to_json(),
            repr(self._clock.time()),
            self._id_ttl_ms,
            self._max_pending,
            self._stream_prefix,
        ]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._appends_batch.add((keys, args, fut))
        result = await fut
        if int(result) == -1:
            raise BackendError("redis", "outbox is full (max_pending reached)")
        if int(result) == -2:
            raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
        return int(result) > 0

    def _flush_appends(self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]) -> None:
        self._spawn(self._send_appends(batch))

    async def _send_appends(
        self, batch: list[tuple[list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        futures = [fut for _, _, fut in batch]
        # What this store had seen before the batch was sent: the script's numbers
        # must all be above it, unless Redis went back meanwhile.
        high, era = self._rw.high, self._rw.era
        try:
            async with self._r().pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    await self._append(keys=keys, args=args, client=pipe)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            _fail_all(futures, exc)
            if not isinstance(exc, Exception):
                raise
            return
        numbers = [r for r in results if isinstance(r, int) and r > 0]
        # Numbers sent before a rewind reported meanwhile may be from before it: unused.
        if numbers and era == self._rw.era:
            self._check_counter(min(numbers) - 1, high, era)
            self._rw.seen(max(numbers))
        for fut, result in zip(futures, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(_translate(result))
            else:
                fut.set_result(result)

    def _entry(self, sink: str, ident: Any, fields: Any) -> OutboxEntry | None:
        if not fields:
            return None
        data = fields.get(b"d", fields.get("d"))
        ts = fields.get(b"t", fields.get("t"))
        if data is None:
            return None
        number = fields.get(b"n", fields.get("n"))
        if number is not None:
            self._rw.seen(int(number))
        return OutboxEntry(
            sink, _text(ident), self._parsed.parse(data, data), float(_text(ts or 0))
        )

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Own pending (after a restart or release), reclaimed, then new entries; leases them."""
        try:
            return await self._fetch(sink, limit)
        except BaseException:
            # A read that failed half-way (Redis killed after it moved entries to our
            # pending list, before we got them) leaves entries only a re-read of our
            # own pending list finds: without this they would wait for reclaim_idle.
            self._reread[sink] = True
            # Redis may have restarted: the next fetch checks the append counter first.
            self._rw.check_due = True
            raise

    async def _fetch(self, sink: str, limit: int) -> list[OutboxEntry]:
        r = self._r()
        leased = self._leased.setdefault(sink, {})
        stream = self._stream(sink)
        out: list[OutboxEntry] = []
        now = self._clock.monotonic()
        if self._rw.check_due:
            high, era = self._rw.high, self._rw.era
            counter = await self._do(r.get(self._seq_key))
            self._rw.check_due = False
            self._check_counter(int(counter or 0), high, era)
        if self._rw.check_leases:
            # A Redis back empty lost the sinks and their groups: register them again.
            await _register(r, self._do, self._sinks_key, self._stream, list(self._leased))
            await self._rw.find_orphans(self._r(), self._do, self._stream, self._leased)
        await self._refresh(sink, now)

        def take(items: Any) -> None:
            for ident, fields in items or ():
                if ident is None:
                    continue
                key = _text(ident)
                if key in leased or len(out) >= limit:
                    continue
                entry = self._entry(sink, ident, fields)
                if entry is None:
                    continue
                leased[key] = entry
                out.append(entry)

        if self._reread.get(sink, True):
            resp = await self._do(
                r.xreadgroup(sink, self.consumer, {stream: "0"}, count=limit + len(leased))
            )
            # Cleared only once the read succeeded: a read that fails (Redis paused,
            # gone) must not leave released entries waiting for reclaim_idle.
            self._reread[sink] = False
            for _, items in resp or ():
                take(items)
        if len(out) < limit and now - self._last_reclaim.get(sink, float("-inf")) >= min(
            1.0, self._reclaim_ms / 4000
        ):
            self._last_reclaim[sink] = now
            resp = await self._do(
                r.xautoclaim(
                    stream,
                    sink,
                    self.consumer,
                    self._reclaim_ms,
                    self._claim_cursor.get(sink, "0-0"),
                    count=limit - len(out),
                )
            )
            # XAUTOCLAIM scans the pending list in pages; carry on where it stopped.
            self._claim_cursor[sink] = _text(resp[0]) if resp else "0-0"
            before = len(out)
            take(resp[1] if resp else ())
            self.reclaimed += len(out) - before
        if len(out) < limit:
            # The append counter rides along with the read (see "Rewinds" above).
            high, era = self._rw.high, self._rw.era
            async with r.pipeline(transaction=False) as pipe:
                pipe.xreadgroup(sink, self.consumer, {stream: ">"}, count=limit - len(out))
                pipe.get(self._seq_key)
                resp, counter = await self._do(pipe.execute(raise_on_error=False))
            # Checked even when the read failed: a Redis that came back without the
            # consumer group (NOGROUP) has gone back too.
            if not isinstance(counter, Exception):
                self._check_counter(int(counter or 0), high, era)
            if isinstance(resp, Exception):
                raise _translate(resp) from resp
            for _, items in resp or ():
                take(items)
        return out

    def _check_counter(self, counter: int, high: int, era: int) -> None:
        """A rewind (see :meth:`_Rewinds.check`) makes every sink re-read its own
        pending entries at once: the acknowledgements Redis forgot come back."""
        if self._rw.check(counter, high, era):
            for sink in self._reread:
                self._reread[sink] = True

    async def _put_back(self, entry: OutboxEntry) -> None:
        """Append a leased entry Redis lost in a rewind again (a new entry, same envelope)."""
        await self._rw.put_back(self._do, self._readd, self._stream(entry.sink), entry)

    async def _put_back_orphans(self) -> None:
        """At close: entries still leased that a rewind took from Redis go back to it,
        so the next opener delivers them (as it would any entry left leased)."""
        held = [e for leased in self._leased.values() for e in leased.values()]
        if not held:
            return
        try:
            # A rewind no fetch or append has seen yet would take the held entries
            # with it: read the counter once more (one round trip, only when holding).
            high, era = self._rw.high, self._rw.era
            counter = await _read_counter(self._r(), self._do, self._seq_key)
            self._check_counter(counter, high, era)
            if self._rw.check_leases:
                await self._rw.find_orphans(self._r(), self._do, self._stream, self._leased)
            for entry in held:
                if self._rw.is_orphan(entry):
                    await self._put_back(entry)
        except Exception as exc:
            self._rw.unsaved(held, exc)

    async def _refresh(self, sink: str, now: float) -> None:
        # Keep our in-flight entries from looking idle, so nobody reclaims a live lease.
        if now - self._last_refresh.get(sink, now) < self._reclaim_ms / 3000:
            return
        self._last_refresh[sink] = now
        ids = list(self._leased.get(sink, {}))
        if ids:
            await self._do(
                self._r().xclaim(self._stream(sink), sink, self.consumer, 0, ids, justid=True)
            )

    async def ack(self, entry: OutboxEntry) -> None:
        """XACK and XDEL the entry (one transaction).

        Acks made in the same event-loop turn share one transaction: one XACK and one
        XDEL per sink. ``ack`` returns once Redis has answered.
        """
        self._r()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks_batch.add((entry, fut))
        await fut
        self._leased.get(entry.sink, {}).pop(entry.ref, None)
        self._rw.forget(entry)

    def _flush_acks(self, batch: list[tuple[OutboxEntry, asyncio.Future[None]]]) -> None:
        self._spawn(self._send_acks(batch))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.get_running_loop().create_task(coro)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send_acks(self, batch: list[tuple[OutboxEntry, asyncio.Future[None]]]) -> None:
        by_sink: dict[str, list[str]] = {}
        for entry, _ in batch:
            by_sink.setdefault(entry.sink, []).append(entry.ref)
        futures = [fut for _, fut in batch]
        try:
            # A plain pipeline, not MULTI: a full Redis (maxmemory, noeviction) refuses
            # every command of a MULTI, but not XACK and XDEL on their own, and XDEL is
            # what frees the memory an outbox backlog holds. Both are idempotent, so a
            # batch that failed half-way is simply sent again; a process that dies
            # between the two leaves an acknowledged entry in the stream, which no
            # consumer reads again (it is no longer pending).
            async with self._r().pipeline(transaction=False) as pipe:
                for sink, refs in by_sink.items():
                    stream = self._stream(sink)
                    pipe.xack(stream, sink, *refs)
                    pipe.xdel(stream, *refs)
                await pipe.execute()
        except BaseException as exc:
            _fail_all(futures, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    async def release(self, entry: OutboxEntry) -> None:
        """Forget the lease; the entry stays in this consumer's pending list and is re-read.

        An entry Redis lost in a rewind is appended again first (a new entry).
        """
        if self._rw.check_leases:
            await self._rw.find_orphans(self._r(), self._do, self._stream, self._leased)
        if self._rw.is_orphan(entry):
            await self._put_back(entry)
        self._leased.get(entry.sink, {}).pop(entry.ref, None)
        self._reread[entry.sink] = True

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Add to the dead-letter stream, XACK and XDEL (one transaction)."""
        r = self._r()
        stream = self._stream(entry.sink)
        async with r.pipeline(transaction=True) as pipe:
            pipe.xadd(self._dead_key, {"sink": entry.sink, "data": letter.to_json()})
            pipe.xack(stream, entry.sink, entry.ref)
            pipe.xdel(stream, entry.ref)
            await self._do(pipe.execute())
        self._leased.get(entry.sink, {}).pop(entry.ref, None)
        self._rw.forget(entry)

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""
        items = await _read_dead(self._r(), self._do, self._dead_key, sink, limit)
        return [letter for _, letter in items]

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """XADD dead letters back to their sink's stream and XDEL them from the dead stream."""
        r = self._r()
        items = await _read_dead(r, self._do, self._dead_key, sink, 1_000_000)
        if refs is not None:
            keep = set(refs)
            items = [(ref, letter) for ref, letter in items if ref in keep]
        now = repr(self._clock.time())
        for ref, letter in items:
            async with r.pipeline(transaction=True) as pipe:
                pipe.xadd(self._stream(letter.sink), {"d": letter.envelope.to_json(), "t": now})
                pipe.xdel(self._dead_key, ref)
                await self._do(pipe.execute())
        return len(items)

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """XLEN of the sink's stream and the enqueue time of its first entry."""
        r = self._r()
        stream = self._stream(sink)
        count = int(await self._do(r.xlen(stream)))
        if count == 0:
            return 0, None
        first = await self._do(r.xrange(stream, "-", "+", count=1))
        if not first:
            return count, None
        fields = first[0][1]
        return count, float(_text(fields.get(b"t", b"0")))

    def __repr__(self) -> str:
        return f"RedisStreamsStore(consumer={self.consumer!r})"
