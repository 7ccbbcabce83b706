"""Alert routing: turn status changes into notices, without alert storms.

:class:`AlertRouter` is a status listener (``monitor.add_listener(router)``). For
each check (and, with ``include_overall``, the overall status) it tells a receiver:

- ``health.alert`` when the status gets worse than what the receiver last heard
  (pass → warn/fail, warn → fail, or fail → warn: any change that is not a recovery);
- ``health.resolved`` when it is back to ``pass``;
- ``health.reminder`` every ``reminder_interval`` while it is not ``pass``.

A check that flaps does not storm: hysteresis in the monitor already absorbs single
blips, and the router sends at most one notice per check per ``min_interval``.
Changes inside that window are coalesced: when it ends, the router sends the
*current* status if it differs from what the receiver last heard, and nothing if
the check flapped back.

Receivers: any object with ``async def deliver(envelope)`` (the sink Protocol the
SignalQueue uses, so alerts can go through a queue with retries and dead letters),
and/or a webhook URL that gets the envelope as JSON in a POST with a timeout.
Notices go out one at a time, in order, from a bounded queue; delivery failures are
logged and counted, never raised into the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock, utc_from_timestamp
from ..errors import ConfigError
from ..models import Envelope
from ._monitor import StatusChange
from ._state import HealthStatus

__all__ = ["AlertRouter", "AlertSink", "AlertStats"]

_log = logging.getLogger("fokha_integration.health.alerts")


@dataclass(frozen=True, slots=True)
class AlertStats:
    """A snapshot of an :class:`AlertRouter`'s counters (see :meth:`AlertRouter.stats`)."""

    sent: int
    """Notices delivered."""
    failed: int
    """Notices whose delivery failed."""
    dropped: int
    """Notices dropped because the pending queue was full."""
    pending: int
    """Notices waiting to be delivered now."""


@runtime_checkable
class AlertSink(Protocol):
    """Anything that takes an envelope: ``async def deliver(envelope)``."""

    async def deliver(self, envelope: Envelope) -> None:
        """Deliver one envelope (raise to report failure)."""
        ...


@dataclass
class _Track:
    notified: HealthStatus = HealthStatus.PASS
    current: HealthStatus = HealthStatus.PASS
    output: str = ""
    critical: bool = True
    last_sent: float | None = None
    flush: asyncio.Task[None] | None = None
    reminder: asyncio.Task[None] | None = None
    seq: int = 0


class AlertRouter:
    """Sends change, resolve and reminder notices for status changes.

    ``sink`` and/or ``webhook_url`` receive the notices. ``min_interval`` (seconds) is
    the least time between two notices about one check; ``reminder_interval``
    (``None`` for never) repeats an unresolved alert. ``only_critical`` ignores
    non-critical checks; ``include_overall`` also routes the overall status under the
    key ``overall``. ``max_pending`` bounds the notices waiting to be delivered (the
    oldest is dropped, and logged, when full). ``timeout`` bounds one delivery.
    """

    def __init__(
        self,
        *,
        sink: AlertSink | None = None,
        webhook_url: str | None = None,
        min_interval: float = 30.0,
        reminder_interval: float | None = 3600.0,
        only_critical: bool = False,
        include_overall: bool = False,
        timeout: float = 5.0,
        max_pending: int = 1000,
        source: str = "fokha",
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
    ) -> None:
        if sink is None and webhook_url is None:
            raise ConfigError("sink", "give a sink, a webhook_url or both", None)
        if webhook_url is not None:
            _validate.string("webhook_url", webhook_url)
        min_interval = _validate.non_negative("min_interval", min_interval)
        reminder_interval = _validate.optional_number(
            "reminder_interval", reminder_interval, exclusive_minimum=0.0
        )
        _validate.boolean("only_critical", only_critical)
        _validate.boolean("include_overall", include_overall)
        timeout = _validate.positive("timeout", timeout)
        _validate.integer("max_pending", max_pending, minimum=1)
        _validate.string("source", source)
        self._sink = sink
        self._webhook_url = webhook_url
        self._min_interval = min_interval
        self._reminder_interval = reminder_interval
        self._only_critical = only_critical
        self._include_overall = include_overall
        self._timeout = timeout
        self._max_pending = max_pending
        self._source = source
        self._clock = clock
        self._logger = logger if logger is not None else _log
        self._tracks: dict[str, _Track] = {}
        self._queue: asyncio.Queue[Envelope] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0
        """Notices delivered."""
        self.failed = 0
        """Notices whose delivery failed."""
        self.dropped = 0
        """Notices dropped because the pending queue was full."""

    # -- the listener ----------------------------------------------------------

    def __call__(self, change: StatusChange) -> None:
        """Take a status change (register the router with ``monitor.add_listener``)."""
        if self._closed:
            return
        if change.check is None and not self._include_overall:
            return
        if self._only_critical and not change.critical:
            return
        if change.new is HealthStatus.UNKNOWN:
            return
        key = change.check if change.check is not None else "overall"
        track = self._tracks.setdefault(key, _Track())
        track.current = change.new
        track.output = change.output
        track.critical = change.critical
        self._consider(key, track)

    def _consider(self, key: str, track: _Track) -> None:
        if track.current is track.notified:
            return
        now = self._clock.monotonic()
        if track.last_sent is None or now - track.last_sent >= self._min_interval:
            self._send_change(key, track)
        elif track.flush is None or track.flush.done():
            until = track.last_sent + self._min_interval
            track.flush = asyncio.get_running_loop().create_task(self._flush_later(key, until))

    async def _flush_later(self, key: str, until: float) -> None:
        # the deadline is absolute: the task may start a while after it was created
        await self._clock.sleep(until - self._clock.monotonic())
        track = self._tracks[key]
        track.flush = None
        self._consider(key, track)

    def _send_change(self, key: str, track: _Track) -> None:
        previous = track.notified
        track.notified = track.current
        track.last_sent = self._clock.monotonic()
        kind = "resolved" if track.current is HealthStatus.PASS else "alert"
        self._enqueue(self._envelope(key, track, kind, previous))
        if track.current is HealthStatus.PASS:
            if track.reminder is not None:
                track.reminder.cancel()
                track.reminder = None
        elif self._reminder_interval is not None and (
            track.reminder is None or track.reminder.done()
        ):
            track.reminder = asyncio.get_running_loop().create_task(self._remind(key))

    async def _remind(self, key: str) -> None:
        assert self._reminder_interval is not None
        while True:
            await self._clock.sleep(self._reminder_interval)
            track = self._tracks[key]
            if track.notified is HealthStatus.PASS:
                return
            self._enqueue(self._envelope(key, track, "reminder", track.notified))

    def _envelope(self, key: str, track: _Track, kind: str, previous: HealthStatus) -> Envelope:
        track.seq += 1
        at = self._clock.time()
        status = track.notified
        verb = {"alert": "is now", "resolved": "is back to", "reminder": "is still"}[kind]
        return Envelope(
            type=f"health.{kind}",
            key=f"{self._source}:{key}:{kind}:{track.seq}",
            payload={
                "kind": kind,
                "check": key,
                "status": status.wire,
                "previous": previous.wire,
                "critical": track.critical,
                "output": track.output,
                "time": utc_from_timestamp(at).isoformat(),
                "source": self._source,
                "text": f"[{self._source}] {key} {verb} {status.wire.upper()}"
                + (f": {track.output}" if track.output and kind != "resolved" else ""),
            },
            created_at=utc_from_timestamp(at),
        )

    # -- delivery ----------------------------------------------------------------

    def _enqueue(self, envelope: Envelope) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(self._max_pending)
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self.dropped += 1
            self._logger.error("alert queue full; dropped %s %s", dropped.type, dropped.key)
        self._queue.put_nowait(envelope)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._deliver_loop())

    async def _deliver_loop(self) -> None:
        assert self._queue is not None
        while True:
            envelope = await self._queue.get()
            try:
                await self._deliver(envelope)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed += 1
                self._logger.error("alert %s not delivered: %r", envelope.key, exc)
            else:
                self.sent += 1
            finally:
                self._queue.task_done()

    async def _deliver(self, envelope: Envelope) -> None:
        errors: list[BaseException] = []
        if self._sink is not None:
            try:
                await asyncio.wait_for(self._sink.deliver(envelope), self._timeout)
            except Exception as exc:
                errors.append(exc)
        if self._webhook_url is not None:
            try:
                await self._post(envelope)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def _post(self, envelope: Envelope) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                self._webhook_url or "",
                data=envelope.to_json(),
                headers={"Content-Type": "application/json", "Idempotency-Key": envelope.id},
            ) as resp,
        ):
            if resp.status >= 300:
                raise ConnectionError(f"webhook answered HTTP {resp.status}")

    def stats(self) -> AlertStats:
        """A snapshot of the counters (the ``sent``/``failed``/``dropped`` attributes, frozen)."""
        pending = 0 if self._queue is None else self._queue.qsize()
        return AlertStats(self.sent, self.failed, self.dropped, pending)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued notice has been delivered (or failed)."""
        if self._queue is not None:
            await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        """Stop timers and the delivery worker (pending notices are dropped)."""
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        for t in self._tracks.values():
            for task in (t.flush, t.reminder):
                if task is not None:
                    task.cancel()
                    tasks.append(task)
        if self._worker is not None:
            self._worker.cancel()
            tasks.append(self._worker)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
