"""Injectable time: a :class:`Clock` protocol, the system clock and a manual clock.

Every component that measures or waits on time (TTLs, backoff, breakers, health
hysteresis, heartbeats) takes a ``clock=`` argument. Production code uses
:data:`SYSTEM_CLOCK`; tests use :class:`ManualClock`, whose :meth:`~ManualClock.advance`
moves time forward and wakes the coroutines sleeping on it, so time-dependent
behaviour is tested without real sleeping.

This module is not a scheduler and not a timer wheel.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from . import _validate
from .errors import FokhaError, OperationTimeoutError

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock", "utc_from_timestamp"]


@runtime_checkable
class Clock(Protocol):
    """What the library needs of time.

    ``monotonic()`` is for durations and deadlines (never goes back);
    ``time()`` is wall-clock seconds since the Unix epoch (for timestamps that
    cross process boundaries); ``sleep()`` waits on this clock's time.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch, UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (``<= 0`` yields once)."""
        ...


def utc_from_timestamp(seconds: float) -> datetime:
    """A timezone-aware UTC datetime for a Unix timestamp."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time`, :func:`asyncio.sleep`."""

    __slots__ = ()

    # The functions themselves, not methods that call them: hot paths read the clock
    # several times per call, and a Python frame per read costs more than the read.
    monotonic = staticmethod(time.monotonic)
    """Seconds from :func:`time.monotonic`."""

    time = staticmethod(time.time)
    """Seconds from :func:`time.time`."""

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep` (``<= 0`` yields once to the event loop)."""
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
"""The shared system clock; stateless, so sharing it is safe."""


class ManualClock:
    """A clock that moves only when told to, for tests.

    ``advance(seconds)`` moves monotonic and wall time forward together and wakes,
    in deadline order, every coroutine whose :meth:`sleep` has come due.
    :meth:`wait_for_sleepers` lets a test wait (on an event, not on time) until the
    code under test is parked in ``sleep`` before it advances the clock.

    Not thread-safe: use it from the event loop's thread.
    """

    def __init__(self, *, monotonic: float = 0.0, wall: float = 1_800_000_000.0) -> None:
        self._mono = _validate.number("monotonic", monotonic)
        self._offset = _validate.number("wall", wall) - self._mono
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._changed: asyncio.Condition | None = None

    def monotonic(self) -> float:
        """The manual monotonic time."""
        return self._mono

    def time(self) -> float:
        """The manual wall time (moves with :meth:`advance`)."""
        return self._mono + self._offset

    @property
    def sleepers(self) -> int:
        """How many coroutines are currently sleeping on this clock."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def sleep(self, seconds: float) -> None:
        """Park until :meth:`advance` reaches ``now + seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._counter), fut))
        await self._notify()
        # A cancelled sleeper stays in the heap; advance() skips futures already done.
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers that came due."""
        self._mono += _validate.non_negative("seconds", seconds)
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def set_wall(self, wall: float) -> None:
        """Jump wall time to ``wall`` without moving monotonic time (a clock step)."""
        self._offset = _validate.number("wall", wall) - self._mono

    async def wait_for_sleepers(self, count: int = 1, *, timeout: float = 5.0) -> None:
        """Wait (in real time, at most ``timeout``) until ``count`` coroutines sleep here."""
        cond = self._condition()

        async def _wait() -> None:
            async with cond:
                await cond.wait_for(lambda: self.sleepers >= count)

        try:
            await asyncio.wait_for(_wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise OperationTimeoutError("wait_for_sleepers", timeout) from None

    async def run_until_idle(self, *, max_steps: int = 10_000) -> None:
        """Advance to each next sleeper's deadline until nobody sleeps here.

        Handy to let a retry loop or a breaker's open period play out at once.
        Each step yields to the event loop so woken tasks run before the next step.
        """
        for _ in range(max_steps):
            for _ in range(3):
                await asyncio.sleep(0)
            pending = [(d, fut) for d, _, fut in self._sleepers if not fut.done()]
            if not pending:
                return
            deadline = min(d for d, _ in pending)
            self.advance(max(0.0, deadline - self._mono))
        raise FokhaError(f"run_until_idle: still busy after {max_steps} steps")

    def __repr__(self) -> str:
        return f"ManualClock(monotonic={self._mono!r}, sleepers={self.sleepers})"
