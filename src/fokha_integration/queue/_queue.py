"""SignalQueue: dedup, a durable outbox, and independent delivery to each sink.

``publish()`` claims the envelope's key in the deduper with a lease, appends the
envelope to the store, and only then commits the claim, so a publish cut short
(cancelled, timed out, a failing store) never leaves a key that answers
"duplicate" for a signal that was not stored. Each sink has its own worker (see
``_worker``): its own cursor in the store, its own :class:`RetryPolicy` and
:class:`CircuitBreaker`, a bound on entries in flight, and per-key ordering (two
envelopes with the same key reach a sink in publish order; different keys go in
parallel). A slow or dead sink never holds up another one.

This module is not a broker: several processes share work only through a store
that supports it (Redis Streams).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..dedup import content_key
from ..errors import ClosedError, ConfigError, OperationTimeoutError
from ..models import Envelope, Model, Signal
from ..resilience import BreakerConfig, CircuitBreaker, RetryPolicy
from ._store import MemoryOutboxStore, OutboxStore, WatchedOutboxStore
from ._types import (
    DeadLetter,
    Deduper,
    PublishResult,
    QueueStats,
    Sink,
    SinkMetrics,
    memory_deduper,
    sink_names,
)
from ._worker import SinkWorker, WorkerSettings

__all__ = ["SignalQueue", "SinkConfig", "default_order_key"]

logger = logging.getLogger("fokha_integration.queue")


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConfig:
    """Per-sink overrides of the queue's defaults (``None``: use the queue's).

    ``retry``: the sink's retry policy; ``breaker``: its breaker (a ready
    :class:`CircuitBreaker`); ``max_in_flight``: entries fetched and not finished;
    ``delivery_timeout``: seconds one ``deliver`` call may take.
    """

    retry: RetryPolicy | None = None
    breaker: CircuitBreaker | None = None
    max_in_flight: int | None = None
    delivery_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight is not None:
            check.integer("max_in_flight", self.max_in_flight, minimum=1)
        check.optional_number("delivery_timeout", self.delivery_timeout, exclusive_minimum=0.0)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigError("retry", "must be a RetryPolicy", self.retry)
        if self.breaker is not None and not isinstance(self.breaker, CircuitBreaker):
            raise ConfigError("breaker", "must be a CircuitBreaker", self.breaker)


def default_order_key(envelope: Envelope) -> str:
    """What orders deliveries per sink: the payload's ``symbol`` if any, else the key.

    Two envelopes with the same order key reach a sink in publish order (an open
    and then a close of EURUSD); different keys are delivered in parallel.
    """
    symbol = envelope.payload.get("symbol")
    return symbol if isinstance(symbol, str) else envelope.key


class SignalQueue:
    """Dedup, durable outbox and fan-out to sinks, each with its own retry and breaker.

    ``dedup``: a :class:`Deduper` (default: :func:`memory_deduper`, in-process);
    ``store``: an :class:`OutboxStore` (default: :class:`MemoryOutboxStore`);
    ``sinks``: where to deliver; ``retry``/``breaker_config``/``max_in_flight``/
    ``delivery_timeout``: defaults for every sink, overridden per sink name by
    ``sink_config``. ``poll_interval`` is how often an idle worker looks at the store
    for entries other processes appended. ``on_delivered(sink_name, envelope)`` is
    called after each successful delivery (for metrics or tests). ``order_key``
    picks what per-key ordering orders by (default: :func:`default_order_key`).
    While a sink's breaker is open its entries wait (without using attempts) and
    look again at least every ``max_breaker_wait`` seconds. ``claim_lease`` is how
    long a publish's dedup claim holds its key before the envelope is stored (a
    publish cut short frees its key after that long). ``close_timeout`` bounds how
    long :meth:`close` waits for a sink call that ignores cancellation.

    Use as ``async with SignalQueue(...) as queue:`` or call :meth:`start` and
    :meth:`close`. A producer-only process may :meth:`publish` without
    :meth:`start` (the store must be shared with the delivering process).
    """

    def __init__(
        self,
        *,
        dedup: Deduper | None = None,
        store: OutboxStore | None = None,
        sinks: Sequence[Sink] = (),
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
        breaker_config: BreakerConfig | None = None,
        max_in_flight: int = 64,
        delivery_timeout: float | None = 30.0,
        sink_config: Mapping[str, SinkConfig] | None = None,
        poll_interval: float = 0.05,
        on_delivered: Callable[[str, Envelope], None] | None = None,
        order_key: Callable[[Envelope], str] = default_order_key,
        max_breaker_wait: float = 1.0,
        claim_lease: float = 30.0,
        close_timeout: float = 5.0,
    ) -> None:
        max_in_flight = check.integer("max_in_flight", max_in_flight, minimum=1)
        delivery_timeout = check.optional_number(
            "delivery_timeout", delivery_timeout, exclusive_minimum=0.0
        )
        self.poll_interval = check.positive("poll_interval", poll_interval)
        self.max_breaker_wait = check.positive("max_breaker_wait", max_breaker_wait)
        self.claim_lease = check.positive("claim_lease", claim_lease)
        self.close_timeout = check.non_negative("close_timeout", close_timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError("retry", "must be a RetryPolicy", retry)
        if not callable(order_key):
            raise ConfigError("order_key", "must be a callable", order_key)
        self.dedup: Deduper = dedup if dedup is not None else memory_deduper(clock=clock)
        self.store: OutboxStore = store if store is not None else MemoryOutboxStore(clock=clock)
        self.clock = clock
        self.on_delivered = on_delivered
        self.order_key = order_key
        self._sinks = list(sinks)
        names = sink_names(self._sinks)
        overrides = dict(sink_config or {})
        unknown = set(overrides) - set(names)
        if unknown:
            raise ConfigError("sink_config", "names unknown sinks", sorted(unknown))
        base_retry = (
            retry
            if retry is not None
            else RetryPolicy(attempts=8, initial=0.2, max_delay=30.0, deadline=None, clock=clock)
        )
        self._workers: dict[str, SinkWorker] = {}
        for sink in self._sinks:
            cfg = overrides.get(sink.name, SinkConfig())
            policy = (
                cfg.retry
                if cfg.retry is not None
                else replace(base_retry, name=f"queue.{sink.name}")
            )
            breaker = (
                cfg.breaker
                if cfg.breaker is not None
                else CircuitBreaker(
                    f"queue.{sink.name}",
                    config=breaker_config
                    if breaker_config is not None
                    else BreakerConfig(
                        failure_threshold=5,
                        open_duration=5.0,
                        open_backoff=2.0,
                        max_open_duration=60.0,
                    ),
                    clock=clock,
                )
            )
            settings = WorkerSettings(
                retry=policy,
                breaker=breaker,
                max_in_flight=cfg.max_in_flight or max_in_flight,
                delivery_timeout=cfg.delivery_timeout
                if cfg.delivery_timeout is not None
                else delivery_timeout,
                poll_interval=self.poll_interval,
                max_breaker_wait=self.max_breaker_wait,
                close_timeout=self.close_timeout,
                order_key=order_key,
                on_delivered=on_delivered,
                clock=clock,
            )
            self._workers[sink.name] = SinkWorker(sink, self.store, settings, self._progressed)
        self._opened = False
        self._started = False
        self._closed = False
        self._progress_event: asyncio.Event | None = None
        self._accepted = self._duplicates = self._conflicts = 0
        self._storing: set[asyncio.Task[bool]] = set()
        self._unwatch: Callable[[], None] | None = None

    def _wake_workers(self) -> None:
        for worker in self._workers.values():
            worker.wake.set()

    def _progressed(self) -> None:
        if self._progress_event is not None:
            self._progress_event.set()

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Open the store and register the sinks (done by :meth:`start` and :meth:`publish`)."""
        if self._closed:
            raise ClosedError("the queue is closed")
        if not self._opened:
            await self.store.open(list(self._workers))
            self._opened = True

    async def start(self) -> None:
        """Open the store and start one delivery worker per sink (returns ``None``)."""
        await self.open()
        if not self._started:
            self._started = True
            for worker in self._workers.values():
                worker.start()
            if isinstance(self.store, WatchedOutboxStore):
                # The store says when appended rows are committed: the workers fetch
                # them one loop turn sooner than after the publish resumes.
                self._unwatch = self.store.watch_appends(self._wake_workers)

    async def drain(self, timeout: float) -> bool:
        """Graceful stop, first half: fetch nothing more, let deliveries under way finish.

        For shutdown (``fokha serve`` calls it on SIGTERM before :meth:`close`):
        entries not yet fetched stay in the store and are delivered after the next
        start, so a drained queue sends nothing twice. Returns whether every delivery
        under way finished within ``timeout`` seconds.
        """
        timeout = check.positive("timeout", timeout)
        results = await asyncio.gather(*(w.drain(timeout) for w in self._workers.values()))
        return all(results)

    async def close(self) -> None:
        """Stop the workers (leased entries stay pending in the store), close the store,
        then close every sink that has a ``close()`` (e.g. a WebhookSink's own session)."""
        if self._closed:
            return
        self._closed = True
        if self._unwatch is not None:
            self._unwatch()
        for worker in self._workers.values():
            await worker.stop()
        if self._storing:  # publishes cut short whose store write is still running
            await asyncio.wait(list(self._storing), timeout=self.close_timeout)
        if self._opened:
            await self.store.close()
        for worker in self._workers.values():
            # A sink that owns resources (WebhookSink's HTTP session) is closed with the
            # queue; sinks that wrap a server or bridge leave it to its owner.
            closer = getattr(worker.sink, "close", None)
            if callable(closer):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result

    async def __aenter__(self) -> SignalQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing ------------------------------------------------------------

    @staticmethod
    def to_envelope(item: Envelope | Model, *, key: str | None = None) -> Envelope:
        """The envelope :meth:`publish` stores for ``item``.

        An :class:`Envelope` is used as is. A :class:`Signal` becomes an envelope of
        type ``"signal"`` with the signal's id as envelope id and, unless ``key`` is
        given, the signal id as dedup key. Other models use ``key`` (required).
        """
        if isinstance(item, Envelope):
            return item
        if isinstance(item, Signal):
            return Envelope.wrap(item, key=key if key is not None else item.id, type="signal")
        if key is None:
            raise ConfigError("key", f"publishing a {type(item).__name__} needs key=", None)
        return Envelope.wrap(item, key=key)

    async def publish(self, item: Envelope | Model, *, key: str | None = None) -> PublishResult:
        """Dedup and store ``item``; returns once the store has accepted it.

        ``accepted``: stored, it will reach every sink per its guarantee;
        ``duplicate``: the key was seen (nothing stored); ``conflict``: the key was
        seen with different content. ``duplicate`` with ``in_flight=True``: another
        publish of the key has not finished, or one was cut short (cancelled, timed
        out, its store failed) less than ``claim_lease`` seconds ago: publish again
        later. A publish that raised or was cancelled is safe to repeat: the claim
        is committed only once the store holds the envelope, and the store write,
        once begun, finishes even if the caller is cancelled.
        """
        if self._closed:
            raise ClosedError("the queue is closed")
        if not self._opened:
            await self.open()
        envelope = item if type(item) is Envelope else self.to_envelope(item, key=key)
        claim = await self.dedup.claim(
            envelope.key,
            type=envelope.type,
            fingerprint=content_key(envelope.payload),
            lease=self.claim_lease,
        )
        status = claim.status
        if status != "first":
            if status == "conflict":
                self._conflicts += 1
                return PublishResult("conflict", envelope.id, envelope.key)
            self._duplicates += 1
            return PublishResult("duplicate", envelope.id, envelope.key, status == "in_flight")
        # The store write and the commit run in a task of their own: cancelling this
        # publish cannot cut them apart (a stored envelope whose key is released
        # would be stored again by a repeat; a committed key without its envelope
        # would lose the signal). The task also yields the loop on every publish,
        # so a tight publish loop cannot starve delivery.
        storing = asyncio.get_running_loop().create_task(self._store(envelope, claim.token))
        self._storing.add(storing)
        storing.add_done_callback(self._stored)
        stored = await asyncio.shield(storing)
        if not stored:
            self._duplicates += 1
            return PublishResult("duplicate", envelope.id, envelope.key)
        self._accepted += 1
        return PublishResult("accepted", envelope.id, envelope.key)

    async def _store(self, envelope: Envelope, token: str | None) -> bool:
        """Append ``envelope``, then commit its claim; release the claim if the append failed."""
        try:
            stored = await self.store.append(envelope)
        except BaseException:
            await self.dedup.release(envelope.key, type=envelope.type, token=token)
            raise
        if stored:
            # Stored is deliverable: the workers need not wait for the claim's commit
            # and for this publish to resume (a few loop turns on a busy loop).
            for worker in self._workers.values():
                worker.wake.set()
        await self.dedup.commit(envelope.key, type=envelope.type, token=token)
        return stored

    def _stored(self, task: asyncio.Task[bool]) -> None:
        self._storing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so a publish cut short does not log "never retrieved";
            # the publish that awaited it (if any) raised it already.
            logger.debug("queue: a store write failed: %r", task.exception())

    # -- dead letters ------------------------------------------------------------

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters (of ``sink`` or all), with reasons and attempt history."""
        await self.open()
        return await self.store.dead_letters(sink, limit=limit)

    async def replay_dead_letters(
        self, sink: str | None = None, refs: Sequence[str] | None = None
    ) -> int:
        """Send dead letters (of ``sink``; only ``refs`` when given) again; returns how many.

        Each replayed entry gets a fresh attempt budget; its envelope id is unchanged
        so receivers still dedup it.
        """
        await self.open()
        count = await self.store.replay(sink, refs)
        for worker in self._workers.values():
            worker.wake.set()
        return count

    # -- observing -----------------------------------------------------------------

    def sink(self, name: str) -> Sink:
        """The sink called ``name``."""
        return self._workers[name].sink

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker of the sink called ``name``."""
        return self._workers[name].breaker

    def stats(self) -> QueueStats:
        """A snapshot of the counters (no store call; see :meth:`metrics` for backlogs)."""
        return QueueStats(
            accepted=self._accepted,
            duplicates=self._duplicates,
            conflicts=self._conflicts,
            sinks=tuple(worker.stats() for worker in self._workers.values()),
            store_rewinds=self._store_counter("rewinds"),
            store_rewound=self._store_counter("rewound"),
        )

    def _store_counter(self, name: str) -> int:
        # Only a store whose history can move backwards (Redis Streams) has these.
        value = getattr(self.store, name, 0)
        return value if isinstance(value, int) else 0

    async def metrics(self) -> dict[str, SinkMetrics]:
        """Per-sink metrics, with pending counts and oldest age read from the store."""
        await self.open()
        out: dict[str, SinkMetrics] = {}
        now = self.clock.time()
        for name, worker in self._workers.items():
            pending, oldest = await self.store.stats(name)
            snap = worker.stats()
            out[name] = SinkMetrics(
                name=name,
                delivered=snap.delivered,
                retried=snap.retried,
                dead_lettered=snap.dead_lettered,
                pending=pending,
                in_flight=snap.in_flight,
                lag=snap.lag,
                oldest_pending_age=0.0 if oldest is None else max(0.0, now - oldest),
                breaker=snap.breaker,
                store_rewinds=self._store_counter("rewinds"),
            )
        return out

    async def wait_idle(self, *, timeout: float) -> None:
        """Wait until no sink has anything pending (raises :class:`OperationTimeoutError`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._progress_event is None:
            self._progress_event = asyncio.Event()
        event = self._progress_event
        while True:
            event.clear()
            # At-most-once entries are acked before their delivery runs: a worker's
            # in-flight count, not only the store, says whether work is left.
            busy = any(w.in_flight for w in self._workers.values())
            for name in () if busy else self._workers:
                pending, _ = await self.store.stats(name)
                if pending:
                    busy = True
                    break
            if not busy:
                return
            left = deadline - loop.time()
            if left <= 0:
                raise OperationTimeoutError("SignalQueue.wait_idle", timeout)
            timer = loop.call_later(min(left, self.poll_interval * 4), event.set)
            try:
                await event.wait()
            finally:
                timer.cancel()
