"""SignalQueue: dedup, a durable outbox, and independent delivery to each sink.

``publish()`` claims the envelope's key in the deduper, appends it to the store and
returns once the store has accepted it. Each sink has its own worker: its own
cursor in the store, its own :class:`RetryPolicy` and :class:`CircuitBreaker`, a
bound on entries in flight, and per-key ordering (two envelopes with the same key
reach a sink in publish order; different keys go in parallel). A slow or dead sink
never holds up another one.

This module is not a broker: several processes share work only through a store
that supports it (Redis Streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..dedup import content_key
from ..errors import CircuitOpenError, ClosedError, OperationTimeoutError, RetryExhaustedError
from ..models import Envelope, Model, Signal, parse_datetime
from ..resilience import BreakerConfig, CircuitBreaker, RetryPolicy
from ._store import MemoryOutboxStore, OutboxStore
from ._types import (
    AttemptRecord,
    DeadLetter,
    Deduper,
    DeliveryResult,
    MemoryDeduper,
    OutboxEntry,
    PublishResult,
    Sink,
    SinkMetrics,
    sink_names,
)

__all__ = ["SignalQueue", "SinkConfig", "default_order_key"]

logger = logging.getLogger("fokha_integration.queue")

_RAMP = 2
"""Runners that may be created-but-not-started at once: how fast parallelism ramps up.

Each runner that starts and finds work waiting creates the next, so a slow sink
gains runners every loop iteration; a sink that answers at once leaves at most this
many runners to start, find nothing and exit."""
_PARKED_FACTOR = 4  # entries parked behind a busy key, per max_in_flight


_new_result = tuple.__new__  # builds a PublishResult without its keyword-aware __new__


def _uncancel(task: asyncio.Task[object]) -> None:
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
    if uncancel is not None:
        uncancel()


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


class _Outcome:
    """What the attempt loop ended with, when it did not raise."""

    __slots__ = ("detail", "kind")

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail


_DELIVERED = _Outcome("delivered")


class _SinkWorker:
    """Delivers one sink's entries; see :class:`SignalQueue`."""

    def __init__(
        self,
        queue: SignalQueue,
        sink: Sink,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        max_in_flight: int,
        delivery_timeout: float | None,
    ) -> None:
        self.queue = queue
        self.sink = sink
        self.name = sink.name
        self.retry = retry
        self.breaker = breaker
        self.max_in_flight = max_in_flight
        self.delivery_timeout = delivery_timeout
        self.at_least_once = sink.guarantee == "at_least_once"
        self.execution = bool(sink.execution)
        self.metrics = SinkMetrics(name=sink.name)
        self.wake = asyncio.Event()
        # Whether a publish set ``wake`` since the fetch loop last cleared it: later
        # publishes skip the call (publish is the hot path).
        self.nudged = False
        self.in_flight = 0
        self._refill = max(1, max_in_flight // 4)
        self._refill_below = max_in_flight - self._refill  # active count that allows one
        self._backlog = False  # the last fetch filled every free slot
        # Entries leased but waiting behind an entry of the same key that a runner is
        # delivering: they do not count against max_in_flight (a stuck key must not
        # stall other keys) but have their own bound, PARKED_FACTOR x max_in_flight.
        self.parked = 0
        # Order keys a runner is delivering -> entries of that key waiting behind it
        # (None until one waits: no deque for the common case). A key is marked when a
        # runner takes its entry, not when the entry is fetched: entries of one key
        # that one runner takes in turn (a sink that answers at once) never wait.
        self._busy_keys: dict[str, deque[OutboxEntry] | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: deque[OutboxEntry] = deque()  # fetched, in fetch order
        self._runners = 0
        self._starting = 0  # runners created but not yet running
        self._runner: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopping = False
        # Runner task -> [the id of the sink call it is in, or 0]: the watchdog (see
        # _watch) samples these instead of each call reading the clock. Inline calls
        # take positive ids from the runner, the others negative ones from here.
        self._calls: dict[asyncio.Task[Any], list[int]] = {}
        self._call_ids = itertools.count(1)
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._loop_time: Callable[[], float] = time.monotonic
        clock = queue.clock
        # The system clock's readings straight from the C functions (no method call).
        system = clock is SYSTEM_CLOCK
        self._wall: Callable[[], float] = time.time if system else clock.time
        self._order_key = queue.order_key
        # A store that takes acknowledgements without the caller waiting (memory,
        # SQLite) is called so.
        self._ack_now: Callable[[OutboxEntry], None] | None = getattr(
            queue.store, "ack_nowait", None
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self._runner = loop.create_task(self._run(), name=f"fokha-queue-{self.name}")
        if self.delivery_timeout is not None:
            self._watchdog = loop.create_task(
                self._watch(self.delivery_timeout), name=f"fokha-queue-{self.name}-watchdog"
            )

    async def stop(self) -> None:
        # Entries this worker still holds (ready, parked, in a runner's hands) stay
        # leased: closing the store gives them back (see OutboxStore.close).
        tasks = list(self._tasks)
        if self._runner is not None:
            tasks.append(self._runner)
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        self._stopping = True
        self.wake.set()
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a backend library that swallows a cancellation must not hang close().
            await asyncio.wait(tasks, timeout=5.0)
        self._ready.clear()
        self._busy_keys.clear()
        self.in_flight = 0
        self.parked = 0

    async def _run(self) -> None:
        store = self.queue.store
        poll = self.queue.poll_interval
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self.nudged = False
            self.wake.clear()
            room = self._room()
            got = 0
            # Caught up: fetch at once, for latency. Behind a backlog (the last fetch
            # filled every free slot): wait until a quarter of the slots are free, so
            # a store is read in batches instead of once per finished delivery.
            if room > 0 and (not self._backlog or room >= self._refill):
                try:
                    entries = await store.fetch(self.name, limit=room)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("sink %r: fetching from the store failed", self.name)
                    entries = []
                got = len(entries)
                self._backlog = got >= room
                if entries:
                    self._schedule(entries)
            if got == 0 or room <= got:
                # A timer instead of wait_for: no extra task per idle wait.
                timer = loop.call_later(poll, self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()

    def _room(self) -> int:
        """How many more entries may be fetched now (see ``_PARKED_FACTOR``)."""
        active = self.in_flight - self.parked
        return min(self.max_in_flight - active, _PARKED_FACTOR * self.max_in_flight - self.parked)

    def _schedule(self, entries: list[OutboxEntry]) -> None:
        self.in_flight += len(entries)
        self._ready.extend(entries)
        if self._starting < _RAMP and self._runners < self.max_in_flight:
            self._spawn()

    def _spawn(self) -> None:
        self._runners += 1
        self._starting += 1
        task = asyncio.get_running_loop().create_task(self._runner_loop())
        self._tasks.add(task)

    async def _runner_loop(self) -> None:
        # Runners take ready entries one after another and exit when none is left.
        # Each one spawns the next while work is waiting, so a slow sink gets up to
        # max_in_flight runners in parallel, while a sink that answers at once is
        # served by one runner without a task per delivery.
        self._starting -= 1
        task = asyncio.current_task()
        assert task is not None
        slot = [0]
        self._calls[task] = slot
        try:
            await self._drain(task, slot)
        finally:
            self._runners -= 1
            self._tasks.discard(task)
            self._calls.pop(task, None)

    async def _drain(self, task: asyncio.Task[Any], slot: list[int]) -> None:
        ready = self._ready
        busy = self._busy_keys
        general = self._deliver_at_least_once if self.at_least_once else self._deliver_at_most_once
        # The inline path: the first attempt of an at-least-once delivery to a sink
        # that does not execute, under a CLOSED breaker, made right here: no
        # coroutine, permit or timer of its own, and one clock reading per delivery.
        inline = self.at_least_once and not self.execution
        breaker = self.breaker
        machine = breaker.machine  # its token protocol, without the wrapper's call
        deliver = self.sink.deliver
        ack_now = self._ack_now
        store = self.queue.store
        metrics = self.metrics
        hook = self.queue.on_delivered
        wall = self._wall
        timed_out = self._timed_out
        order_key = self._order_key
        # One clock reading per delivery: the end of one is the start of the next
        # (for the duration of a failed attempt), and gives the lag of a delivered one.
        last = wall()
        after: OutboxEntry | None = None  # the next entry of the key just delivered
        call = 0  # ids of this runner's inline calls (see _calls)
        while not self._stopping:
            if after is not None:
                entry = after  # its key stays marked: this runner goes on with it
                after = None
            elif ready:
                entry = ready.popleft()
                key = order_key(entry[2])
                if key in busy:
                    # Another runner is delivering this key: wait behind it, in order.
                    waiting = busy[key]
                    if waiting is None:
                        waiting = busy[key] = deque()
                    waiting.append(entry)
                    self.parked += 1
                    continue
                busy[key] = None
                if ready and self._starting < _RAMP and self._runners < self.max_in_flight:
                    self._spawn()
            else:
                break
            try:
                token = machine.closed_generation if inline else None
                if token is None:
                    await general(entry, task)
                    last = wall()
                else:
                    call += 1
                    slot[0] = call
                    try:
                        result = await deliver(entry[2])
                    except BaseException as exc:
                        slot[0] = 0
                        exc = self._call_failed(task, exc)
                        breaker.fast_failure(token, exc)
                        if not isinstance(exc, Exception):
                            raise
                        await self._first_failed(entry, last, exc)
                        last = wall()
                    else:
                        slot[0] = 0
                        if timed_out:
                            self._clear_timeout(task)
                        if not machine.fast_success(token):
                            breaker.fast_success(token)
                        if (result is None or result.ok) and ack_now is not None:
                            ack_now(entry)
                            metrics.delivered += 1
                            last = wall()
                            lag = last - entry[3]
                            metrics.lag = lag if lag > 0.0 else 0.0
                            if hook is not None:
                                hook(self.name, entry[2])
                        else:
                            await self._first_done(entry, result, last)
                            last = wall()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store failure while acknowledging: the lease is dropped so the
                # entry is fetched again (at-least-once) rather than stuck.
                logger.exception("sink %r: bookkeeping for %s failed", self.name, entry.envelope.id)
                with contextlib.suppress(Exception):
                    await store.release(entry)
            # Finished: free the slot and the key.
            in_flight = self.in_flight = self.in_flight - 1
            waiting = busy.pop(key, None)
            if waiting:
                # The next entry of this key goes first, to this same runner.
                after = waiting.popleft()
                busy[key] = waiting
                self.parked -= 1
            # Behind a backlog, wake the fetch loop only once a refill's worth of
            # slots is free (the parked bound is left to _run: at worst one wake
            # too many).
            if not self._backlog or in_flight - self.parked <= self._refill_below:
                self.wake.set()
            progress = self.queue._progress_event
            if progress is not None:
                progress.set()

    def _expired(self, envelope: Envelope) -> bool:
        if not self.execution or envelope.type != "signal":
            return False
        raw = envelope.payload.get("expires_at")
        if not isinstance(raw, str):
            return False
        try:
            expires = parse_datetime(raw, field_name="expires_at").timestamp()
        except ValueError:
            return False
        return self.queue.clock.time() >= expires

    async def _call_sink(
        self, envelope: Envelope, task: asyncio.Task[Any] | None = None
    ) -> DeliveryResult | None:
        if self.delivery_timeout is None:
            return await self.sink.deliver(envelope)
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        # A runner's own task has a slot; an attempt the retry policy runs in a task
        # of its own (attempt_timeout) gets one for the length of the call.
        slot = self._calls.get(task)
        owned = slot is None
        if slot is None:
            slot = self._calls[task] = [0]
        slot[0] = -next(self._call_ids)
        try:
            result = await self.sink.deliver(envelope)
        except BaseException as exc:
            slot[0] = 0
            counted = self._call_failed(task, exc)
            if counted is exc:
                raise
            raise counted from None
        finally:
            if owned:
                self._calls.pop(task, None)
        slot[0] = 0
        if self._timed_out:
            self._clear_timeout(task)
        return result

    def _call_failed(self, task: asyncio.Task[Any], exc: BaseException) -> BaseException:
        """What a call on ``task`` that raised ``exc`` counts as: a cancellation by the
        watchdog is a timeout."""
        if self._clear_timeout(task) and isinstance(exc, asyncio.CancelledError):
            return OperationTimeoutError(f"deliver to {self.name}", self.delivery_timeout or 0.0)
        return exc

    def _clear_timeout(self, task: asyncio.Task[Any]) -> bool:
        """Forget a watchdog cancellation of ``task`` (the sink may have swallowed it)."""
        timed_out = self._timed_out
        if task not in timed_out:
            return False
        timed_out.discard(task)
        _uncancel(task)  # ours, not the caller's
        return True

    async def _watch(self, timeout: float) -> None:
        # One watchdog per sink enforces the timeout: far cheaper than a timer (or
        # even a clock reading) per call. Every period it samples the id of the call
        # each runner is in; a call seen under the same id for at least ``timeout``
        # is cancelled. A call is thus cancelled after between
        # ``timeout`` and ``timeout`` plus two periods (a quarter-timeout at most).
        period = min(timeout / 8, 0.5)
        seen: dict[asyncio.Task[Any], tuple[int, float]] = {}
        while not self._stopping:
            await asyncio.sleep(period)
            now = self._loop_time()
            still: dict[asyncio.Task[Any], tuple[int, float]] = {}
            for task, slot in list(self._calls.items()):
                count = slot[0]
                if not count:
                    continue
                first = seen.get(task)
                if first is None or first[0] != count:
                    first = (count, now)
                still[task] = first
                if now - first[1] >= timeout and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()
            seen = still

    async def _deliver_at_least_once(
        self, entry: OutboxEntry, task: asyncio.Task[Any] | None = None
    ) -> None:
        # The first attempt, when the runner's inline path (see _drain) does
        # not apply: an execution sink, or a breaker that is not plainly CLOSED. A
        # failure is handed to _retry, which re-raises it from the retry policy's
        # first call (no second call to the sink).
        envelope = entry.envelope
        if self.execution and self._expired(envelope):
            await self._dead(entry, "expired", "", [])
            return
        breaker = self.breaker
        try:
            permit = breaker.acquire()
        except CircuitOpenError:
            await self._retry(entry, [], None, 0)
            return
        started = self._wall()
        try:
            result = await self._call_sink(envelope, task)
        except BaseException as exc:
            breaker.release(permit, exc)
            if not isinstance(exc, Exception):
                raise
            await self._first_failed(entry, started, exc)
            return
        breaker.release(permit, None)
        await self._first_done(entry, result, started)

    async def _first_failed(self, entry: OutboxEntry, started: float, exc: Exception) -> None:
        """The first attempt (begun at wall time ``started``) raised ``exc``: retry."""
        await self._retry(entry, [self._attempt(1, started, _describe(exc))], exc, 1)

    async def _first_done(
        self, entry: OutboxEntry, result: DeliveryResult | None, started: float
    ) -> None:
        """The first attempt returned ``result``: acknowledge, or dead-letter a refusal."""
        if result is None or result.ok:
            ack_now = self._ack_now
            if ack_now is not None:
                ack_now(entry)
            else:
                await self.queue.store.ack(entry)
            self._delivered(entry)
            return
        record = self._attempt(1, started, _rejection(result))
        await self._dead(entry, "rejected", _refusal(result), [record])

    def _attempt(self, number: int, started: float, error: str) -> AttemptRecord:
        """Attempt ``number``, begun at wall time ``started``, that ended now in ``error``."""
        now = self._wall()
        return AttemptRecord(number, now, max(0.0, now - started), error)

    async def _retry(
        self,
        entry: OutboxEntry,
        history: list[AttemptRecord],
        replayed: Exception | None,
        attempt_no: int,
    ) -> None:
        """The slow path: attempts under the retry policy, after the first one failed
        (``replayed``) or could not be made (breaker open, ``attempt_no`` 0)."""
        clock = self.queue.clock
        envelope = entry.envelope

        async def attempt() -> _Outcome:
            nonlocal attempt_no, replayed
            if replayed is not None:
                exc, replayed = replayed, None
                raise exc
            while True:
                if self._expired(envelope):
                    return _Outcome("expired")
                try:
                    permit = self.breaker.acquire()
                except CircuitOpenError as exc:
                    # Waiting for the breaker is not an attempt: the sink was not called.
                    # Capped: a half-open breaker's hint can be a whole probe timeout.
                    cap = self.queue.max_breaker_wait
                    hint = exc.retry_after if exc.retry_after else cap
                    await clock.sleep(min(max(hint, 0.001), cap))
                    continue
                break
            attempt_no += 1
            if attempt_no > 1:
                self.metrics.retried += 1
            sent = envelope if attempt_no == 1 else replace(envelope, attempt=attempt_no - 1)
            started = self._wall()
            try:
                result = await self._call_sink(sent)
            except BaseException as exc:
                self.breaker.release(permit, exc)
                if isinstance(exc, Exception):
                    if isinstance(exc, TimeoutError) and not isinstance(exc, OperationTimeoutError):
                        exc = OperationTimeoutError(
                            f"deliver to {self.name}", self.delivery_timeout or 0.0
                        )
                    history.append(self._attempt(attempt_no, started, _describe(exc)))
                    raise exc from None
                raise
            self.breaker.release(permit, None)
            if result is not None and not result.ok:
                history.append(self._attempt(attempt_no, started, _rejection(result)))
                return _Outcome("rejected", _refusal(result))
            return _DELIVERED

        try:
            outcome = await self.retry.call(attempt)
        except RetryExhaustedError as exc:
            outcome = _Outcome("deadline", _describe(exc.last_exception))
        except Exception as exc:
            kind = "max_attempts" if self.retry.is_retryable(exc) else "not_retryable"
            outcome = _Outcome(kind, _describe(exc))
        if outcome is _DELIVERED:
            await self.queue.store.ack(entry)
            self._delivered(entry)
            return
        await self._dead(entry, outcome.kind, outcome.detail, history)

    async def _deliver_at_most_once(
        self, entry: OutboxEntry, task: asyncio.Task[Any] | None = None
    ) -> None:
        store = self.queue.store
        # Acknowledge first: a crash from here on loses this delivery, never repeats it.
        await store.ack(entry)
        envelope = entry.envelope
        if self._expired(envelope):
            await self._dead(entry, "expired", "", [])
            return
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            await self._dead(entry, "at_most_once_failed", _describe(exc), [])
            return
        started = self._wall()
        try:
            result = await self._call_sink(envelope, task)
        except asyncio.CancelledError:
            self.breaker.release(permit, None)
            raise
        except Exception as exc:
            self.breaker.release(permit, exc)
            record = self._attempt(1, started, _describe(exc))
            await self._dead(entry, "at_most_once_failed", _describe(exc), [record])
            return
        self.breaker.release(permit, None)
        if result is not None and not result.ok:
            record = self._attempt(1, started, _rejection(result))
            await self._dead(entry, "rejected", _refusal(result), [record])
            return
        self._delivered(entry)

    def _delivered(self, entry: OutboxEntry) -> None:
        metrics = self.metrics
        metrics.delivered += 1
        metrics.lag = max(0.0, self._wall() - entry.enqueued_at)
        hook = self.queue.on_delivered
        if hook is not None:
            hook(self.name, entry.envelope)

    async def _dead(
        self, entry: OutboxEntry, reason: str, detail: str, history: list[AttemptRecord]
    ) -> None:
        letter = DeadLetter(
            sink=self.name,
            envelope=entry.envelope,
            reason=reason,
            detail=detail[:2000],
            attempts=tuple(history),
            dead_at=self.queue.clock.time(),
        )
        await self.queue.store.dead_letter(entry, letter)
        self.metrics.dead_lettered += 1
        logger.warning(
            "sink %r: dead-lettered %s (%s) after %d attempt(s): %s",
            self.name,
            entry.envelope.id,
            reason,
            len(history),
            detail,
        )


def _rejection(result: DeliveryResult) -> str:
    """The error text of an attempt the sink refused."""
    return f"rejected: {result.reason} {result.detail}".strip()


def _refusal(result: DeliveryResult) -> str:
    if result.detail:
        return f"{result.reason}: {result.detail}" if result.reason else result.detail
    return result.reason


def default_order_key(envelope: Envelope) -> str:
    """What orders deliveries per sink: the payload's ``symbol`` if any, else the key.

    Two envelopes with the same order key reach a sink in publish order (an open
    and then a close of EURUSD); different keys are delivered in parallel.
    """
    symbol = envelope.payload.get("symbol")
    return symbol if isinstance(symbol, str) else envelope.key


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:500]


class SignalQueue:
    """Dedup, durable outbox and fan-out to sinks, each with its own retry and breaker.

    ``dedup``: a :class:`Deduper` (default: an in-process :class:`MemoryDeduper`);
    ``store``: an :class:`OutboxStore` (default: :class:`MemoryOutboxStore`);
    ``sinks``: where to deliver; ``retry``/``breaker_config``/``max_in_flight``/
    ``delivery_timeout``: defaults for every sink, overridden per sink name by
    ``sink_config``. ``poll_interval`` is how often an idle worker looks at the store
    for entries other processes appended. ``on_delivered(sink_name, envelope)`` is
    called after each successful delivery (for metrics or tests). ``order_key``
    picks what per-key ordering orders by (default: :func:`default_order_key`).
    While a sink's breaker is open its entries wait (without using attempts) and
    look again at least every ``max_breaker_wait`` seconds.

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
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.dedup: Deduper = dedup if dedup is not None else MemoryDeduper(clock=clock)
        self.store: OutboxStore = store if store is not None else MemoryOutboxStore(clock=clock)
        self.clock = clock
        self.poll_interval = poll_interval
        self.on_delivered = on_delivered
        self.order_key = order_key
        self.max_breaker_wait = max_breaker_wait
        self._sinks = list(sinks)
        names = sink_names(self._sinks)
        overrides = dict(sink_config or {})
        unknown = set(overrides) - set(names)
        if unknown:
            raise ValueError(f"sink_config names unknown sinks: {sorted(unknown)}")
        base_retry = (
            retry
            if retry is not None
            else RetryPolicy(attempts=8, initial=0.2, max_delay=30.0, deadline=None, clock=clock)
        )
        self._workers: dict[str, _SinkWorker] = {}
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
            self._workers[sink.name] = _SinkWorker(
                self,
                sink,
                retry=policy,
                breaker=breaker,
                max_in_flight=cfg.max_in_flight or max_in_flight,
                delivery_timeout=cfg.delivery_timeout
                if cfg.delivery_timeout is not None
                else delivery_timeout,
            )
        # A store that appends without waiting (the memory store) is called so.
        self._append_now: Callable[[Envelope], bool] | None = getattr(
            self.store, "append_nowait", None
        )
        self._worker_list = list(self._workers.values())
        self._opened = False
        self._started = False
        self._closed = False
        self._progress_event: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Open the store and register the sinks (done by :meth:`start` and :meth:`publish`)."""
        if self._closed:
            raise ClosedError("the queue is closed")
        if not self._opened:
            await self.store.open(list(self._workers))
            self._opened = True

    async def start(self) -> None:
        """Open the store and start one delivery worker per sink."""
        await self.open()
        if not self._started:
            self._started = True
            for worker in self._workers.values():
                worker.start()

    async def close(self) -> None:
        """Stop the workers (leased entries stay pending in the store), close the store,
        then close every sink that has a ``close()`` (e.g. a WebhookSink's own session)."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers.values():
            await worker.stop()
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
            raise ValueError(f"publishing a {type(item).__name__} needs key=")
        return Envelope.wrap(item, key=key)

    async def publish(self, item: Envelope | Model, *, key: str | None = None) -> PublishResult:
        """Dedup and store ``item``; returns once the store has accepted it.

        ``accepted``: stored, it will reach every sink per its guarantee;
        ``duplicate``: the key was seen (nothing stored); ``conflict``: the key was
        seen with different content. A store failure raises (after releasing the
        dedup claim, so publishing again is safe).
        """
        if self._closed:
            raise ClosedError("the queue is closed")
        if not self._opened:
            await self.open()
        envelope = item if type(item) is Envelope else self.to_envelope(item, key=key)
        fingerprint = content_key(envelope.payload)
        claim = await self.dedup.claim(envelope.key, type=envelope.type, fingerprint=fingerprint)
        status = claim.status
        if status != "first":
            if status == "in_flight":
                return PublishResult("duplicate", envelope.id, envelope.key, True)
            return PublishResult(
                "conflict" if status == "conflict" else "duplicate", envelope.id, envelope.key
            )
        append_now = self._append_now
        try:
            if append_now is not None:
                stored = append_now(envelope)
            else:
                stored = await self.store.append(envelope)
        except BaseException:
            await self.dedup.release(envelope.key, type=envelope.type)
            raise
        if not stored:
            return _new_result(PublishResult, ("duplicate", envelope.id, envelope.key, False))
        for worker in self._worker_list:
            if not worker.nudged:
                worker.nudged = True
                worker.wake.set()
        return _new_result(PublishResult, ("accepted", envelope.id, envelope.key, False))

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

    async def metrics(self) -> dict[str, SinkMetrics]:
        """Per-sink metrics (pending and oldest age read from the store)."""
        await self.open()
        out: dict[str, SinkMetrics] = {}
        now = self.clock.time()
        for name, worker in self._workers.items():
            pending, oldest = await self.store.stats(name)
            m = worker.metrics
            m.pending = pending
            m.in_flight = worker.in_flight
            m.oldest_pending_age = 0.0 if oldest is None else max(0.0, now - oldest)
            m.breaker = worker.breaker.state.value
            out[name] = replace(m)
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
