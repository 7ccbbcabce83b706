"""A token-bucket rate limiter driven by an injectable clock.

Tokens refill continuously at ``rate`` per second up to ``burst``. Waiters are
served first come, first served: a caller that arrives later never overtakes one
that is already waiting, so a stream of small requests cannot starve a large one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import OperationTimeoutError

__all__ = ["RateLimiter", "RateLimiterStats"]


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    """A snapshot of a :class:`RateLimiter` (see :meth:`RateLimiter.stats`)."""

    rate: float
    burst: float
    tokens: float
    """Tokens available at the time of the snapshot."""
    acquired: int
    """Successful acquisitions (``try_acquire`` true or ``acquire`` returned)."""
    refused: int
    """``try_acquire`` calls that answered false."""
    timed_out: int
    """``acquire`` calls that raised ``OperationTimeoutError``."""


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    ``try_acquire()`` never waits; ``await acquire(timeout=...)`` waits its turn and
    raises :class:`OperationTimeoutError` at once when the wait it would need is
    longer than ``timeout`` (it does not sleep first and fail later).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = SYSTEM_CLOCK):
        rate = _validate.positive("rate", rate)
        if burst is None:
            capacity = max(1.0, rate)
        else:
            capacity = _validate.number("burst", burst, minimum=1.0)
        self.rate = rate
        self.burst = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock.monotonic()
        self._lock = asyncio.Lock()
        self._acquired = self._refused = self._timed_out = 0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        """Tokens available right now."""
        self._refill()
        return self._tokens

    def _check(self, tokens: float) -> None:
        _validate.number("tokens", tokens, exclusive_minimum=0.0, maximum=self.burst)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are there now (and nobody is queued); never waits."""
        self._check(tokens)
        if not self._lock.locked():
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                self._acquired += 1
                return True
        self._refused += 1
        return False

    async def acquire(self, tokens: float = 1.0, *, timeout: float | None = None) -> None:
        """Wait until ``tokens`` are available and take them.

        Raises :class:`OperationTimeoutError` when they cannot be had within
        ``timeout`` seconds (``None``: wait as long as it takes).
        """
        self._check(tokens)
        _validate.optional_number("timeout", timeout, minimum=0.0)
        clock = self._clock
        start = clock.monotonic()
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    self._acquired += 1
                    return
                wait = (tokens - self._tokens) / self.rate
                if timeout is not None and clock.monotonic() - start + wait > timeout:
                    self._timed_out += 1
                    raise OperationTimeoutError("rate limiter acquire", timeout)
                await clock.sleep(wait)

    def stats(self) -> RateLimiterStats:
        """A snapshot of the limiter's settings and counters."""
        return RateLimiterStats(
            self.rate, self.burst, self.tokens, self._acquired, self._refused, self._timed_out
        )

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, burst={self.burst:g})"
