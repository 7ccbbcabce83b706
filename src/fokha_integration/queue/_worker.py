"""The delivery worker of one sink: fetch, per-key ordering, attempts, bookkeeping.

One :class:`SinkWorker` per sink. A fetch loop leases entries from the store in
batches; a pool of runner tasks delivers them (up to ``max_in_flight`` at once);
entries with the same order key wait behind each other; one watchdog task enforces
the delivery timeout. Every attempt, the first included, goes through the sink's
:class:`RetryPolicy` and :class:`CircuitBreaker`, and every outcome ends in exactly
one store write (an acknowledgement or a dead letter), retried with backoff until
it sticks: nothing here hands an entry to a sink again because a store write failed.

Not for: deciding what is published (``_queue``), storing (``_store`` and the
backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from .._aio import cancel_and_wait
from ..clock import Clock
from ..errors import CircuitOpenError, OperationTimeoutError, RetryExhaustedError
from ..models import Envelope, parse_datetime
from ..resilience import CircuitBreaker, Permit, RetryPolicy
from ._store import FastOutboxStore, OutboxStore
from ._types import (
    AttemptRecord,
    BadSinkResultError,
    DeadLetter,
    DeliveryResult,
    OutboxEntry,
    Sink,
    SinkStats,
)

__all__ = ["SinkWorker", "WorkerSettings"]

logger = logging.getLogger("fokha_integration.queue")

_RAMP = 2
"""Runners created but not started yet, at most: how fast parallelism ramps up.

A runner that takes an entry while others wait creates the next one, so a slow sink
gains runners every loop turn, while a sink that answers at once is served by one
runner and leaves at most this many to start, find nothing and exit."""
_PARKED_FACTOR = 4  # entries parked behind a busy key, per max_in_flight
_MIN_STORE_RETRY = 0.01  # seconds between retries of a failed store write, at least


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What one sink's worker needs from the queue (resolved per sink)."""

    retry: RetryPolicy
    breaker: CircuitBreaker
    max_in_flight: int
    delivery_timeout: float | None
    poll_interval: float
    max_breaker_wait: float
    close_timeout: float
    order_key: Callable[[Envelope], str]
    on_delivered: Callable[[str, Envelope], None] | None
    clock: Clock


class _Job(NamedTuple):
    """A fetched entry and the order key it is delivered under."""

    entry: OutboxEntry
    key: str


class _Final(NamedTuple):
    """An attempt's final, non-retryable outcome: the dead-letter reason and detail."""

    reason: str
    detail: str


def signal_expired(envelope: Envelope, now: float) -> bool:
    """Whether ``envelope`` is a signal whose payload's ``expires_at`` (an RFC 3339
    time) is at or before ``now`` (Unix seconds); a missing or unreadable one never
    expires."""
    if envelope.type != "signal":
        return False
    raw = envelope.payload.get("expires_at")
    if not isinstance(raw, str):
        return False
    try:
        expires = parse_datetime(raw, field_name="expires_at").timestamp()
    except ValueError:
        return False
    return now >= expires


class SinkWorker:
    """Delivers one sink's entries; see the module docstring."""

    def __init__(
        self,
        sink: Sink,
        store: OutboxStore,
        settings: WorkerSettings,
        on_progress: Callable[[], None],
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.store = store
        self.settings = settings
        self.breaker = settings.breaker
        self.retry = settings.retry
        self.clock = settings.clock
        self.at_least_once = sink.guarantee == "at_least_once"
        self.execution = bool(sink.execution)
        self.wake = asyncio.Event()
        self.in_flight = 0  # entries fetched and not finished (parked ones included)
        self.delivered = self.retried = self.dead_lettered = self.store_errors = 0
        self.lag = 0.0
        self._on_progress = on_progress
        self._fast_ack = store.ack_nowait if isinstance(store, FastOutboxStore) else None
        limit = settings.max_in_flight
        self._refill = max(1, limit // 4)
        self._backlog = False  # the last fetch filled every free slot
        # Order key -> entries of that key waiting behind the one being delivered.
        # A key is present while one of its entries is ready or being delivered.
        self._busy: dict[str, deque[OutboxEntry]] = {}
        self.parked = 0
        self._draining = False
        self._ready: deque[_Job] = deque()
        self._runners = 0
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetcher: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # Task -> monotonic deadline of the sink call it is in (see _watch).
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._timed_out: set[asyncio.Task[object]] = set()
        self._calling = asyncio.Event()  # set while a sink call is registered
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the fetch loop (and the watchdog when calls have a timeout)."""
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._fetch_loop(), name=f"fokha-queue-{self.name}")
        timeout = self.settings.delivery_timeout
        if timeout is not None:
            self._watchdog = loop.create_task(
                self._watch(timeout), name=f"fokha-queue-{self.name}-watchdog"
            )

    async def drain(self, timeout: float) -> bool:
        """Stop fetching and let the deliveries under way finish, for up to ``timeout``.

        No new call starts (ready and parked entries stay leased and go back to the
        store on close), so nothing is sent twice; returns whether every call under
        way finished in time (if not, :meth:`stop` cancels the rest, and they are
        delivered again after a restart).
        """
        self._draining = True  # runners finish their current call and take no new one
        fetcher, self._fetcher = self._fetcher, None
        await cancel_and_wait(fetcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        return not self._tasks

    async def stop(self) -> None:
        """Stop every task of this worker; entries it holds stay leased (the store's
        close gives them back). A sink call that ignores cancellation for longer than
        ``close_timeout`` is abandoned (its coroutine closed), so shutdown never hangs."""
        self._stopping = True
        self.wake.set()
        tasks: list[asyncio.Task[None]] = list(self._tasks)
        tasks.extend(t for t in (self._fetcher, self._watchdog) if t is not None)
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self.settings.close_timeout)
            if stuck:
                logger.error(
                    "sink %r: %d call(s) ignored cancellation for %.1fs; abandoning them",
                    self.name,
                    len(stuck),
                    self.settings.close_timeout,
                )
                for task in stuck:
                    # GeneratorExit is not a CancelledError: a sink that swallows
                    # cancellation still unwinds, and the task ends at its next step.
                    with contextlib.suppress(RuntimeError):
                        task.get_coro().close()
                    task.cancel()
                await asyncio.wait(stuck, timeout=self.settings.close_timeout)
        self._ready.clear()
        self._busy.clear()
        self.in_flight = self.parked = 0

    def stats(self) -> SinkStats:
        """A snapshot of this sink's counters."""
        return SinkStats(
            name=self.name,
            delivered=self.delivered,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            in_flight=self.in_flight,
            lag=self.lag,
            store_errors=self.store_errors,
            breaker=self.breaker.state.value,
        )

    # -- fetching and scheduling ------------------------------------------------

    async def _fetch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # Draining ends the loop too, not only the cancellation drain() sends: a store
        # client may swallow it (redis-py can turn a cancelled read into a connection
        # error), and the fetcher would then wait here for ever.
        while not self._stopping and not self._draining:
            self.wake.clear()
            room = self._room()
            got = 0
            # Caught up: fetch at once, for latency. Behind a backlog (the last fetch
            # filled every free slot): wait until a quarter of the slots are free, so
            # the store is read in batches instead of once per finished delivery.
            if room > 0 and (not self._backlog or room >= self._refill):
                try:
                    entries = await self.store.fetch(self.name, limit=room)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("sink %r: fetching from the store failed", self.name)
                    entries = []
                got = len(entries)
                self._backlog = got >= room
                self._schedule(entries)
            if got == 0 or room <= got:
                timer = loop.call_later(self.settings.poll_interval, self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()

    def _room(self) -> int:
        """How many more entries may be fetched now (see ``_PARKED_FACTOR``)."""
        limit = self.settings.max_in_flight
        active = self.in_flight - self.parked
        return min(limit - active, _PARKED_FACTOR * limit - self.parked)

    def _schedule(self, entries: list[OutboxEntry]) -> None:
        order_key = self.settings.order_key
        for entry in entries:
            key = order_key(entry.envelope)
            self.in_flight += 1
            waiting = self._busy.get(key)
            if waiting is None:
                self._busy[key] = deque()
                self._ready.append(_Job(entry, key))
            else:
                waiting.append(entry)  # behind an entry of the same key, in order
                self.parked += 1
        self._spawn_if_needed()

    def _spawn_if_needed(self) -> None:
        if self._ready and self._starting < _RAMP and self._runners < self.settings.max_in_flight:
            self._runners += 1
            self._starting += 1
            task = asyncio.get_running_loop().create_task(
                self._run(), name=f"fokha-queue-{self.name}-runner"
            )
            self._tasks.add(task)

    async def _run(self) -> None:
        """A runner: deliver ready jobs, then the entries parked behind each, until none is left."""
        self._starting -= 1
        task = asyncio.current_task()
        try:
            while self._ready and not self._stopping and not self._draining:
                job: _Job | None = self._ready.popleft()
                self._spawn_if_needed()
                while job is not None:
                    await self._deliver(job.entry)
                    job = self._finished(job.key)
        finally:
            self._runners -= 1
            if task is not None:
                self._tasks.discard(task)

    def _finished(self, key: str) -> _Job | None:
        """Free the slot of an entry of ``key``; the next entry of that key, if one waits."""
        self.in_flight -= 1
        waiting = self._busy.get(key)
        following: _Job | None = None
        if waiting:
            following = _Job(waiting.popleft(), key)
            self.parked -= 1
        else:
            self._busy.pop(key, None)
        if not self._backlog or self._room() >= self._refill:
            self.wake.set()
        self._on_progress()
        # Stopping or draining: the parked entry was never started; it stays leased and
        # goes back to the store with the rest.
        return None if self._stopping or self._draining else following

    # -- one entry ----------------------------------------------------------------

    async def _deliver(self, entry: OutboxEntry) -> None:
        """Deliver ``entry`` per the sink's guarantee; never raises but CancelledError."""
        try:
            if self.at_least_once:
                await self._deliver_at_least_once(entry)
            else:
                await self._deliver_at_most_once(entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not kill the runner; the entry stays leased
            logger.exception("sink %r: delivering %s failed", self.name, entry.envelope.id)

    async def _deliver_at_least_once(self, entry: OutboxEntry) -> None:
        history: list[AttemptRecord] = []
        final: _Final | None
        if self.execution and signal_expired(entry.envelope, self.clock.time()):
            final = _Final("expired", "")
        else:
            try:
                final = await self.retry.call(self._attempt, entry, history)
            except RetryExhaustedError as exc:
                final = _Final("deadline", _describe(exc.last_exception))
            except Exception as exc:
                reason = "max_attempts" if self.retry.is_retryable(exc) else "not_retryable"
                final = _Final(reason, _describe(exc))
        if final is None:
            await self._store_write(entry, None)
            self._count_delivered(entry)
        else:
            await self._dead(entry, final, history)

    async def _attempt(self, entry: OutboxEntry, history: list[AttemptRecord]) -> _Final | None:
        """One attempt: ``None`` when delivered, a :class:`_Final` when it must not be
        retried; raises when it failed (the retry policy decides what follows)."""
        envelope = entry.envelope
        permit = await self._permit(envelope)
        if permit is None:
            return _Final("expired", "")
        if history:
            self.retried += 1
            envelope = replace(envelope, attempt=len(history))
        return await self._call(envelope, permit, history)

    async def _call(
        self, envelope: Envelope, permit: Permit, history: list[AttemptRecord]
    ) -> _Final | None:
        """Call the sink under ``permit``: ``None`` when delivered, a :class:`_Final`
        for a result that ends the entry; raises what the sink raised. A failed call
        is added to ``history``; the breaker hears how the call went either way."""
        number = len(history) + 1
        started = self.clock.time()
        try:
            result = await self._call_sink(envelope)
        except Exception as exc:
            self.breaker.release(permit, exc)
            history.append(self._record(number, started, _describe(exc)))
            raise
        except BaseException as exc:
            self.breaker.release(permit, exc)
            raise
        final = _final_of(self.name, result)
        self._release(permit, result)
        if final is not None:
            history.append(self._record(number, started, _attempt_error(result, final)))
        return final

    def _release(self, permit: Permit, result: object) -> None:
        """Tell the breaker how a call that returned ``result`` went: a refusal is an
        answer (the sink is up); a result of the wrong type counts as a failure."""
        if result is None or isinstance(result, DeliveryResult):
            self.breaker.release(permit, None)
        else:
            self.breaker.release(permit, BadSinkResultError(self.name, result))

    async def _permit(self, envelope: Envelope) -> Permit | None:
        """Leave from the breaker, waiting (not an attempt) while it is open;
        ``None`` when the envelope expired meanwhile."""
        cap = self.settings.max_breaker_wait
        while True:
            if self.execution and signal_expired(envelope, self.clock.time()):
                return None
            try:
                return self.breaker.acquire()
            except CircuitOpenError as exc:
                # Capped: a half-open breaker's hint can be a whole probe timeout.
                hint = exc.retry_after if exc.retry_after else cap
                await self.clock.sleep(min(max(hint, 0.001), cap))

    async def _deliver_at_most_once(self, entry: OutboxEntry) -> None:
        # Acknowledge first: a crash from here on loses this delivery, never repeats it.
        await self._store_write(entry, None)
        envelope = entry.envelope
        if self.execution and signal_expired(envelope, self.clock.time()):
            await self._dead(entry, _Final("expired", ""), [], acked=True)
            return
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError as exc:
            await self._dead(entry, _Final("at_most_once_failed", _describe(exc)), [], acked=True)
            return
        history: list[AttemptRecord] = []
        try:
            outcome = await self._call(envelope, permit, history)
        except Exception as exc:
            failed = _Final("at_most_once_failed", _describe(exc))
            await self._dead(entry, failed, history, acked=True)
            return
        if outcome is None:
            self._count_delivered(entry)
        else:
            await self._dead(entry, outcome, history, acked=True)

    # -- the sink call and its timeout ---------------------------------------------

    async def _call_sink(self, envelope: Envelope) -> object:
        timeout = self.settings.delivery_timeout
        if timeout is None:
            return await self.sink.deliver(envelope)
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = self.clock.monotonic() + timeout
        self._calling.set()
        try:
            return await self.sink.deliver(envelope)
        except asyncio.CancelledError:
            if self._forget_timeout(task):
                raise OperationTimeoutError(f"deliver to {self.name}", timeout) from None
            raise
        finally:
            self._deadlines.pop(task, None)
            self._forget_timeout(task)  # the sink may have swallowed the cancellation

    def _forget_timeout(self, task: asyncio.Task[object]) -> bool:
        """Whether the watchdog cancelled ``task``; that cancellation is taken back."""
        if task not in self._timed_out:
            return False
        self._timed_out.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
        if uncancel is not None:
            uncancel()
        return True

    async def _watch(self, timeout: float) -> None:
        # One watchdog per sink instead of a timer per call: every period it cancels
        # the calls past their deadline, so a call ends between ``timeout`` and
        # ``timeout`` plus one period (an eighth of the timeout, half a second at most).
        # It sleeps on the injected clock only while a call is in progress, so a
        # manual clock in a test is not kept busy by an idle watchdog.
        period = min(timeout / 8, 0.5)
        while not self._stopping:
            if not self._deadlines:
                self._calling.clear()
                await self._calling.wait()
                continue
            await self.clock.sleep(period)
            now = self.clock.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if now >= deadline and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()

    # -- bookkeeping -----------------------------------------------------------------

    def _record(self, number: int, started: float, error: str) -> AttemptRecord:
        """Attempt ``number``, begun at wall time ``started``, that ended now in ``error``."""
        now = self.clock.time()
        return AttemptRecord(number, now, max(0.0, now - started), error)

    def _count_delivered(self, entry: OutboxEntry) -> None:
        self.delivered += 1
        self.lag = max(0.0, self.clock.time() - entry.enqueued_at)
        hook = self.settings.on_delivered
        if hook is not None:
            hook(self.name, entry.envelope)

    async def _dead(
        self,
        entry: OutboxEntry,
        final: _Final,
        history: list[AttemptRecord],
        *,
        acked: bool = False,
    ) -> None:
        letter = DeadLetter(
            sink=self.name,
            envelope=entry.envelope,
            reason=final.reason,
            detail=final.detail[:2000],
            attempts=tuple(history),
            dead_at=self.clock.time(),
        )
        await self._store_write(entry, letter)
        self.dead_lettered += 1
        logger.warning(
            "sink %r: dead-lettered %s (%s) after %d attempt(s): %s%s",
            self.name,
            entry.envelope.id,
            final.reason,
            len(history),
            final.detail,
            " (already acknowledged: at-most-once)" if acked else "",
        )

    async def _store_write(self, entry: OutboxEntry, letter: DeadLetter | None) -> None:
        """Acknowledge ``entry`` (``letter`` None) or dead-letter it, retrying a failed
        write with the retry policy's backoff until it sticks. The entry stays leased
        meanwhile: it is never handed to the sink again because a write failed."""
        delays = None
        while True:
            try:
                if letter is not None:
                    await self.store.dead_letter(entry, letter)
                elif self._fast_ack is not None:
                    self._fast_ack(entry)
                else:
                    await self.store.ack(entry)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.store_errors += 1
                if delays is None:
                    delays = self.retry.delays()
                delay = max(next(delays), _MIN_STORE_RETRY)
                logger.warning(
                    "sink %r: %s of %s failed (%r); retrying in %.3fs",
                    self.name,
                    "acknowledgement" if letter is None else "dead letter",
                    entry.envelope.id,
                    exc,
                    delay,
                )
                await self.clock.sleep(delay)


def _final_of(sink: str, result: object) -> _Final | None:
    """The delivery outcome contract (see :class:`DeliveryResult`): ``None`` when delivered."""
    if result is None:
        return None
    if isinstance(result, DeliveryResult):
        if result.ok:
            return None
        return _Final("rejected", _refusal(result))
    return _Final("bad_sink_result", str(BadSinkResultError(sink, result)))


def _attempt_error(result: object, final: _Final) -> str:
    """The error text of an attempt that ended in ``final``."""
    if isinstance(result, DeliveryResult):
        return f"rejected: {result.reason} {result.detail}".strip()
    return final.detail


def _refusal(result: DeliveryResult) -> str:
    if result.detail:
        return f"{result.reason}: {result.detail}" if result.reason else result.detail
    return result.reason or "rejected"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:500]
