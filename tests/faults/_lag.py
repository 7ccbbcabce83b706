"""A loop-lag sampler: how long the event loop was blocked, measured continuously.

A callback re-arms itself every ``interval`` seconds and records how late it ran;
the largest lateness seen is :attr:`LoopLagSampler.max_lag`. On Linux the time the
thread spent waiting for a CPU (``/proc/thread-self/schedstat``: the machine was
busy with other processes) is taken off each lateness, so a loaded test machine
does not pass for a blocked loop, while CPU work and blocking calls on the loop
still count in full. Any fault test can use
it (the ``loop_lag`` fixture in ``conftest.py``) to assert that nothing blocked the
event loop longer than :data:`MAX_BLOCK` (scaled with ``tests.support.timeout``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support import timeout

MAX_BLOCK = 0.1
"""Seconds the event loop may be blocked in a fault test (before scaling)."""


_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _run_delay() -> float:
    """Seconds this thread has waited on a run queue so far (0.0 where unknown)."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopLagSampler:
    """Samples the running loop's lag until :meth:`stop`; ``max_lag`` is the worst seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.max_wall_lag = 0.0  # lateness including waits for a CPU, for the message
        self.samples = 0
        self._delay_at_arm = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._arm()

    def _arm(self) -> None:
        self._delay_at_arm = _run_delay()
        self._due = time.monotonic() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        wall = time.monotonic() - self._due
        lag = wall - (_run_delay() - self._delay_at_arm)
        self.max_wall_lag = max(self.max_wall_lag, wall)
        self.samples += 1
        if lag > self.max_lag:
            self.max_lag = lag
        self._arm()

    def stop(self) -> None:
        """Stop sampling (the figures stay)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def check(self, limit: float = MAX_BLOCK) -> None:
        """Fail when the loop was blocked longer than ``limit`` seconds (scaled)."""
        bound = timeout(limit)
        assert self.max_lag <= bound, (
            f"the event loop was blocked for {self.max_lag * 1000:.0f} ms "
            f"(bound {bound * 1000:.0f} ms; {self.max_wall_lag * 1000:.0f} ms counting waits "
            f"for a CPU; {self.samples} samples)"
        )
