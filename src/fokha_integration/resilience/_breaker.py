"""The asyncio-facing circuit breaker and a registry of named breakers.

:class:`CircuitBreaker` wraps :class:`BreakerStateMachine` with a clock, an error
classifier and state-change listeners, and offers three ways to guard a call::

    result = await breaker.call(fetch, url)       # explicit

    async with breaker:                           # context manager
        await fetch(url)

    @breaker                                      # decorator
    async def fetch(url): ...

All three are safe under concurrency: the permit of an ``async with`` block is kept
in a context variable, so concurrent tasks sharing one breaker do not mix them up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import TypeVar

from typing_extensions import ParamSpec, Self

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, FokhaError
from ._breaker_core import (
    BreakerConfig,
    BreakerMetrics,
    BreakerState,
    BreakerStateMachine,
    Outcome,
    Permit,
    StateChange,
)

__all__ = ["BreakerRegistry", "CircuitBreaker", "ErrorClassifier", "StateListener"]

_log = logging.getLogger("fokha_integration.breaker")

P = ParamSpec("P")
T = TypeVar("T")

ErrorClassifier = Callable[[BaseException], Outcome]
"""Says how an exception counts: ``Outcome.FAILURE``, ``SUCCESS`` or ``IGNORE``."""

StateListener = Callable[[StateChange], None]
"""Called (synchronously) after each state change; must not raise."""

_SUCCESS = Outcome.SUCCESS  # an Enum member lookup costs more than the rest of a line

_PERMITS: ContextVar[tuple[tuple[int, Permit], ...]] = ContextVar(
    "fokha_breaker_permits", default=()
)


class CircuitBreaker:
    """Stops calling a dependency that keeps failing, and probes it before trusting it again.

    ``failure_on`` lists the exception types that count as failures (default: any
    :class:`Exception`); ``ignore_on`` the ones that count as nothing (e.g. a 404
    that says nothing about the service's health). ``classifier`` replaces both.
    Cancellation is always ignored. Other keyword arguments build a
    :class:`BreakerConfig`, or pass ``config=``.
    """

    def __init__(
        self,
        name: str = "breaker",
        *,
        config: BreakerConfig | None = None,
        failure_on: tuple[type[BaseException], ...] = (Exception,),
        ignore_on: tuple[type[BaseException], ...] = (),
        classifier: ErrorClassifier | None = None,
        clock: Clock = SYSTEM_CLOCK,
        listeners: tuple[StateListener, ...] = (),
        logger: logging.Logger | None = None,
        **config_kwargs: float | int | None,
    ) -> None:
        if config is not None and config_kwargs:
            raise ConfigError("config", "pass either config= or config keywords, not both")
        cfg = config if config is not None else BreakerConfig(**config_kwargs)  # type: ignore[arg-type]
        self._machine = BreakerStateMachine(cfg, name=name)
        self._clock = clock
        self._monotonic = clock.monotonic
        self._failure_on = failure_on
        self._ignore_on = ignore_on
        self._classifier = classifier
        self._listeners: list[StateListener] = list(listeners)
        self._logger = logger if logger is not None else _log

    # -- introspection -------------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name (used in errors, logs and metrics)."""
        return self._machine.name

    @property
    def machine(self) -> BreakerStateMachine:
        """The sans-I/O state machine underneath (for callers that keep their own time)."""
        return self._machine

    @property
    def config(self) -> BreakerConfig:
        """The breaker's configuration."""
        return self._machine.config

    @property
    def state(self) -> BreakerState:
        """The current state (time-driven transitions applied)."""
        state = self._machine.state(self._clock.monotonic())
        self._emit()
        return state

    def metrics(self) -> BreakerMetrics:
        """A snapshot of counters and state."""
        snapshot = self._machine.metrics(self._clock.monotonic())
        self._emit()
        return snapshot

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener`` after each state change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def classify(self, exc: BaseException | None) -> Outcome:
        """How a call that ended with ``exc`` (``None``: returned normally) counts."""
        if exc is None:
            return Outcome.SUCCESS
        if isinstance(exc, asyncio.CancelledError):
            return Outcome.IGNORE
        if self._classifier is not None:
            return self._classifier(exc)
        if isinstance(exc, self._ignore_on):
            return Outcome.IGNORE
        if isinstance(exc, self._failure_on):
            return Outcome.FAILURE
        return Outcome.IGNORE

    # -- manual control --------------------------------------------------------

    def force_open(self) -> None:
        """Refuse every call until :meth:`reset` (e.g. maintenance)."""
        self._machine.force_open(self._clock.monotonic())
        self._emit()

    def disable(self) -> None:
        """Let every call through, recording nothing, until :meth:`reset`."""
        self._machine.disable(self._clock.monotonic())
        self._emit()

    def reset(self) -> None:
        """Close the breaker and forget its history."""
        self._machine.reset(self._clock.monotonic())
        self._emit()

    def trip(self, reason: str = "tripped by hand") -> None:
        """Open the breaker now."""
        self._machine.trip(self._clock.monotonic(), reason)
        self._emit()

    # -- the permit protocol (for callers that manage calls themselves) --------

    def acquire(self) -> Permit:
        """Ask leave for one call; raises :class:`CircuitOpenError` when refused."""
        try:
            return self._machine.acquire(self._monotonic())
        finally:
            if self._machine.has_changes:
                self._emit()

    def release(self, permit: Permit, exc: BaseException | None = None) -> None:
        """Report the end of a call made under ``permit`` (``exc``: what it raised)."""
        outcome = _SUCCESS if exc is None else self.classify(exc)
        self._machine.record(permit, outcome, self._monotonic())
        if self._machine.has_changes:
            self._emit()

    def _emit(self) -> None:
        if not self._machine.has_changes:
            return
        changes = self._machine.drain_changes()
        for change in changes:
            self._logger.log(
                logging.WARNING if change.new is BreakerState.OPEN else logging.INFO,
                "circuit %r: %s -> %s (%s)",
                change.name,
                change.old.value,
                change.new.value,
                change.reason,
            )
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:
                    self._logger.exception("breaker listener %r failed", listener)

    # -- guarded calls -------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` if the breaker allows it, recording the outcome."""
        permit = self.acquire()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self.release(permit, exc)
            raise
        self.release(permit, None)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function so every call goes through :meth:`call`."""

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    async def __aenter__(self) -> Self:
        permit = self.acquire()
        _PERMITS.set((*_PERMITS.get(), (id(self), permit)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _PERMITS.get()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == id(self):
                permit = stack[i][1]
                _PERMITS.set(stack[:i] + stack[i + 1 :])
                break
        else:  # pragma: no cover - only if the context variable was tampered with
            raise FokhaError("breaker __aexit__ without a matching __aenter__")
        self.release(permit, exc)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"


class BreakerRegistry:
    """Named breakers, created on first use; one registry per application.

    ``defaults`` are keyword arguments for :class:`CircuitBreaker` applied to every
    breaker the registry creates (``clock`` included).
    """

    def __init__(self, **defaults: object) -> None:
        self._defaults = defaults
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, **overrides: object) -> CircuitBreaker:
        """The breaker called ``name``, created with defaults + ``overrides`` if new."""
        breaker = self._breakers.get(name)
        if breaker is None:
            options = {**self._defaults, **overrides}
            breaker = CircuitBreaker(name, **options)  # type: ignore[arg-type]
            self._breakers[name] = breaker
        return breaker

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def metrics(self) -> dict[str, BreakerMetrics]:
        """A metrics snapshot of every breaker, keyed by name."""
        return {name: b.metrics() for name, b in self._breakers.items()}
