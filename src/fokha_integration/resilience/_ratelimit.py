"""A token-bucket rate limiter driven by an injectable clock.

Tokens refill continuously at ``rate`` per second up to ``burst``. Waiters are
served first come, first served: a caller that arrives later never overtakes one
that is already waiting, so a stream of small requests cannot starve a large one.
"""

from __future__ import annotations

import asyncio

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, OperationTimeoutError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    ``try_acquire()`` never waits; ``await acquire(timeout=...)`` waits its turn and
    raises :class:`OperationTimeoutError` at once when the wait it would need is
    longer than ``timeout`` (it does not sleep first and fail later).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = SYSTEM_CLOCK):
        if not rate > 0:
            raise ConfigError("rate", "must be > 0", rate)
        capacity = float(burst) if burst is not None else max(1.0, float(rate))
        if capacity < 1:
            raise ConfigError("burst", "must be >= 1", burst)
        self.rate = float(rate)
        self.burst = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock.monotonic()
        self._lock = asyncio.Lock()

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
        if not 0 < tokens <= self.burst:
            raise ConfigError("tokens", f"must be in (0, burst={self.burst:g}]", tokens)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are there now (and nobody is queued); never waits."""
        self._check(tokens)
        if self._lock.locked():
            return False
        self._refill()
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    async def acquire(self, tokens: float = 1.0, *, timeout: float | None = None) -> None:
        """Wait until ``tokens`` are available and take them.

        Raises :class:`OperationTimeoutError` when they cannot be had within
        ``timeout`` seconds (``None``: wait as long as it takes).
        """
        self._check(tokens)
        clock = self._clock
        start = clock.monotonic()
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    return
                wait = (tokens - self._tokens) / self.rate
                if timeout is not None and clock.monotonic() - start + wait > timeout:
                    raise OperationTimeoutError("rate limiter acquire", timeout)
                await clock.sleep(wait)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, burst={self.burst:g})"
