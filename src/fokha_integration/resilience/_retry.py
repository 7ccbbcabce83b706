"""Retry with exponential backoff and full jitter.

A :class:`RetryPolicy` is an immutable description of *how* to retry; every call
(:meth:`RetryPolicy.call`, or a function decorated with the policy) keeps its own
attempt counter and deadline in local variables, so one policy is safely shared by
any number of concurrent coroutines.

We use ``backoff``'s exponential generator for the delay sequence, but not its
decorators: they read the system clock directly (so tests would have to sleep),
cannot honour a per-exception retry-after, and have no total deadline that accounts
for the next wait. The loop here is small and driven by an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import backoff
from typing_extensions import ParamSpec

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import CircuitOpenError, ConfigError, OperationTimeoutError, RetryExhaustedError

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "parse_retry_after",
    "retry_testing",
]

logger = logging.getLogger("fokha_integration.retry")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: timeouts, throttling and transient server errors."""


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """What a :class:`RetryHook` is told before each wait.

    ``attempt`` is the number of the attempt that just failed (1-based), ``delay``
    the seconds about to be waited, ``elapsed`` the seconds since the first attempt
    started, ``exception`` what the failed attempt raised.
    """

    name: str
    attempt: int
    delay: float
    elapsed: float
    exception: BaseException


class RetryHook(Protocol):
    """Called before each retry wait; must not raise (errors are logged and ignored)."""

    def __call__(self, details: RetryDetails, /) -> None: ...


@dataclass(frozen=True, slots=True)
class _TestMode:
    attempts: int | None
    wait: bool


_TEST_MODE: ContextVar[_TestMode | None] = ContextVar("fokha_retry_test_mode", default=None)


@contextlib.contextmanager
def retry_testing(*, attempts: int | None = None, wait: bool = False) -> Iterator[None]:
    """A test mode for every :class:`RetryPolicy` used inside the ``with`` block.

    ``wait=False`` (the default) makes backoff waits zero; ``attempts`` caps the
    number of attempts (``1`` disables retrying). The setting lives in a context
    variable, so it covers the current task and tasks it starts, and nothing else.
    """
    if attempts is not None:
        _validate.integer("attempts", attempts, minimum=1)
    _validate.boolean("wait", wait)
    token = _TEST_MODE.set(_TestMode(attempts, wait))
    try:
        yield
    finally:
        _TEST_MODE.reset(token)


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delay-seconds or an HTTP-date).

    ``now`` is the current wall time (Unix seconds) for the HTTP-date form. Returns
    ``None`` for a value that is neither.
    """
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _retry_after_of(exc: BaseException, now: float) -> float | None:
    value = getattr(exc, "retry_after", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    headers = getattr(exc, "headers", None)
    if isinstance(headers, Mapping):
        header = headers.get("Retry-After")
        if isinstance(header, str):
            return parse_retry_after(header, now=now)
    return None


def _check_retry_on(value: object) -> None:
    """``retry_on`` is a tuple of exception types or a predicate (``5`` is neither)."""
    if isinstance(value, tuple):
        if all(isinstance(t, type) and issubclass(t, BaseException) for t in value):
            return
    elif callable(value) and not isinstance(value, type):
        return
    raise ConfigError("retry_on", "must be a tuple of exception types or a predicate", value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How to retry an async operation.

    Delays grow as ``initial * multiplier ** n`` up to ``max_delay`` and, with
    ``jitter="full"``, each is drawn uniformly from ``[0, that]`` (AWS's "full
    jitter": spreads out clients that failed together). An exception that carries
    ``retry_after`` (seconds), or ``headers`` with an HTTP ``Retry-After`` (as
    aiohttp's ``ClientResponseError`` does), makes the next wait exactly that long.

    What is retried: an exception with an integer ``status``/``status_code``
    attribute (HTTP errors from aiohttp and this library) is retried only when the
    status is in ``retry_statuses``; any other exception when it is an instance of
    ``retry_on`` (a tuple of types or a predicate). :class:`CircuitOpenError` is never
    retried: the breaker already said when to come back.

    Stopping: after ``attempts`` attempts the last exception is re-raised as is. If
    the next wait would end past ``deadline`` seconds from the first attempt, the
    policy stops and raises :class:`RetryExhaustedError` from the last exception.
    A ``retry_after`` longer than ``max_retry_after`` also stops the retries (the
    last exception is re-raised): a peer asking for a five-minute pause is better
    surfaced than silently waited on. Cancellation is never retried.

    ``attempt_timeout`` bounds each attempt (real time, via :func:`asyncio.wait_for`);
    an attempt that overruns raises :class:`OperationTimeoutError`, which is retried
    like any other exception ``retry_on`` accepts.
    """

    attempts: int = 5
    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    jitter: str = "full"
    deadline: float | None = 60.0
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,)
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    max_retry_after: float = 300.0
    attempt_timeout: float | None = None
    name: str = "retry"
    hooks: Sequence[RetryHook] = ()
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate.integer("attempts", self.attempts, minimum=1)
        _validate.non_negative("initial", self.initial)
        _validate.number("multiplier", self.multiplier, minimum=1.0)
        _validate.non_negative("max_delay", self.max_delay)
        _validate.one_of("jitter", self.jitter, ("full", "none"))
        _validate.optional_number("deadline", self.deadline, exclusive_minimum=0.0)
        _validate.optional_number("attempt_timeout", self.attempt_timeout, exclusive_minimum=0.0)
        _validate.non_negative("max_retry_after", self.max_retry_after)
        _validate.string("name", self.name)
        _check_retry_on(self.retry_on)
        if not isinstance(self.retry_statuses, (set, frozenset)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in self.retry_statuses
        ):
            raise ConfigError("retry_statuses", "must be a set of int", self.retry_statuses)
        hooks: object = self.hooks
        if not isinstance(hooks, (list, tuple)) or not all(callable(h) for h in hooks):
            raise ConfigError("hooks", "must be a list or tuple of callables", self.hooks)
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise ConfigError("rng", "must be a random.Random or None", self.rng)

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether this policy would retry after ``exc``."""
        if isinstance(exc, CircuitOpenError) or not isinstance(exc, Exception):
            return False
        status = _status_of(exc)
        if status is not None:
            return status in self.retry_statuses
        if isinstance(self.retry_on, tuple):
            return isinstance(exc, self.retry_on)
        return bool(self.retry_on(exc))

    def delays(self) -> Iterator[float]:
        """The backoff sequence before jitter: ``initial * multiplier**n``, capped."""
        gen = backoff.expo(base=self.multiplier, factor=self.initial, max_value=self.max_delay)
        next(gen)  # prime the generator (backoff's generators expect a first send)
        yield from gen

    def jittered_delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts: :meth:`delays` with the policy's jitter
        applied, drawn from ``rng`` (else the policy's ``rng``, else ``random``)."""
        for value in self.delays():
            yield self._jittered(value, rng)

    def _jittered(self, value: float, rng: random.Random | None = None) -> float:
        if self.jitter == "none":
            return value
        source = rng if rng is not None else self.rng
        return source.uniform(0.0, value) if source is not None else random.uniform(0.0, value)

    def _notify(self, details: RetryDetails) -> None:
        for hook in self.hooks:
            try:
                hook(details)
            except Exception:
                logger.exception("retry hook %r failed", hook)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying per this policy."""
        start = self.clock.monotonic()
        try:
            if self.attempt_timeout is None:
                return await fn(*args, **kwargs)
            return await self._bounded(fn(*args, **kwargs), self.attempt_timeout)
        except Exception as exc:
            failure = exc
        return await self.resume(failure, start, fn, *args, **kwargs)

    async def resume(
        self,
        failure: Exception,
        started: float,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Carry on after a first attempt of ``fn(*args, **kwargs)`` raised ``failure``.

        ``started`` is when that attempt began (``clock.monotonic()``; the deadline
        counts from it). Waits and retries exactly as :meth:`call` would have after
        that first failure, and re-raises ``failure`` at once when it is not to be
        retried. For callers that make the first attempt themselves (it nearly
        always succeeds, and a frame fewer on that path is worth having).
        """
        mode = _TEST_MODE.get()
        attempts = self.attempts
        waits = True
        if mode is not None:
            waits = mode.wait
            if mode.attempts is not None:
                attempts = min(attempts, mode.attempts)
        clock = self.clock
        delays: Iterator[float] | None = None
        attempt = 1
        exc = failure
        while True:
            if attempt >= attempts or not self.is_retryable(exc):
                raise exc
            hinted = _retry_after_of(exc, clock.time())
            if hinted is not None and hinted > self.max_retry_after:
                raise exc
            if delays is None:
                delays = self.delays()
            base = next(delays)
            delay = hinted if hinted is not None else self._jittered(base)
            if not waits:
                delay = 0.0
            elapsed = clock.monotonic() - started
            if self.deadline is not None and elapsed + delay > self.deadline:
                raise RetryExhaustedError(attempt, elapsed, exc) from exc
            self._notify(RetryDetails(self.name, attempt, delay, elapsed, exc))
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s: attempt %d failed (%r); retrying in %.3fs", self.name, attempt, exc, delay
                )
            await clock.sleep(delay)
            attempt += 1
            try:
                if self.attempt_timeout is None:
                    return await fn(*args, **kwargs)
                return await self._bounded(fn(*args, **kwargs), self.attempt_timeout)
            except Exception as next_exc:
                exc = next_exc

    @staticmethod
    async def _bounded(awaitable: Awaitable[T], seconds: float) -> T:
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:  # builtin TimeoutError only from Python 3.11
            raise OperationTimeoutError("retry attempt", seconds) from None

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function so every call goes through :meth:`call`."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper
