"""The circuit breaker as a sans-I/O state machine.

:class:`BreakerStateMachine` does no I/O and never reads a clock: every method takes
``now`` (monotonic seconds). The asyncio-facing :class:`CircuitBreaker` (in
``_breaker``) feeds it the clock and the outcomes of real calls. Tests drive this
class directly with plain numbers.

States::

            trip (consecutive failures, or failure rate >= threshold
                  over the count window once minimum_calls were seen)
    CLOSED ─────────────────────────────────────────────────────▶ OPEN
      ▲                                                            │ open_duration
      │ half_open_successes probe successes                        ▼ passes
      └──────────────────────────────── HALF_OPEN ◀────────────────┘
                                           │ a probe fails or times out
                                           └──────────▶ OPEN (duration grows)

    FORCED_OPEN: refuse everything until reset().  DISABLED: allow everything,
    record nothing, until reset().

A :class:`Permit` is handed out for each allowed call and handed back with its
outcome. Permits carry the generation of the state they were issued in: an outcome
for a permit issued before the last transition is counted in the metrics but does
not move the state (a slow call started while closed cannot close a breaker that
has since opened).
"""

from __future__ import annotations

import enum
import functools
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .. import _validate as check
from ..errors import CircuitOpenError, ConfigError

__all__ = [
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerState",
    "BreakerStateMachine",
    "Outcome",
    "Permit",
    "StateChange",
]


class BreakerState(str, enum.Enum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class Outcome(str, enum.Enum):
    """How a call counts: as a success, a failure, or not at all."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORE = "ignore"


# Module-level aliases: on Python 3.11 each ``Enum.MEMBER`` lookup costs ~100-200 ns,
# which is most of a breaker's per-call budget.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED
_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_IGNORE = Outcome.IGNORE


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """When a breaker trips and how it recovers.

    - ``failure_threshold``: trip after this many consecutive failures (``None``: off).
    - ``failure_rate_threshold``: trip when the failure share of the last
      ``window_size`` calls reaches this (0..1), but only after ``minimum_calls``
      calls were recorded (``None``: off).
    - ``slow_call_duration``: a *successful* call slower than this (seconds) counts
      as a failure (``None``: off).
    - ``open_duration``: seconds to stay open before letting probes through; each
      consecutive re-open multiplies it by ``open_backoff`` up to
      ``max_open_duration``.
    - ``half_open_max_probes``: probes allowed at once while half-open;
      ``half_open_successes``: probe successes needed to close;
      ``probe_timeout``: a probe that has not reported after this many seconds
      counts as failed (so a hung probe cannot keep the breaker half-open).
    """

    failure_threshold: int | None = 5
    failure_rate_threshold: float | None = None
    window_size: int = 20
    minimum_calls: int = 10
    slow_call_duration: float | None = None
    open_duration: float = 30.0
    open_backoff: float = 1.0
    max_open_duration: float = 300.0
    half_open_max_probes: int = 1
    half_open_successes: int = 1
    probe_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold is not None:
            check.integer("failure_threshold", self.failure_threshold, minimum=1)
        rate = self.failure_rate_threshold
        if rate is not None:
            check.number("failure_rate_threshold", rate, exclusive_minimum=0.0, maximum=1.0)
        if self.failure_threshold is None and rate is None:
            raise ConfigError("failure_threshold", "one trip condition must be set", None)
        check.integer("window_size", self.window_size, minimum=1)
        check.integer("minimum_calls", self.minimum_calls, minimum=1, maximum=self.window_size)
        check.optional_number("slow_call_duration", self.slow_call_duration, exclusive_minimum=0.0)
        check.non_negative("open_duration", self.open_duration)
        check.number("open_backoff", self.open_backoff, minimum=1.0)
        check.number("max_open_duration", self.max_open_duration, minimum=self.open_duration)
        check.integer("half_open_max_probes", self.half_open_max_probes, minimum=1)
        check.integer("half_open_successes", self.half_open_successes, minimum=1)
        check.positive("probe_timeout", self.probe_timeout)


class Permit(NamedTuple):
    """Leave to make one call; hand it back with :meth:`BreakerStateMachine.record`."""

    generation: int
    started: float
    probe: bool
    serial: int


# A named tuple's own constructor is a Python function (a frame per call); building the
# tuple directly does the same in C. One Permit is made per guarded call.
_new_permit = functools.partial(tuple.__new__, Permit)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A transition, as told to state-change listeners."""

    name: str
    old: BreakerState
    new: BreakerState
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of one breaker's counters and state."""

    name: str
    state: BreakerState
    calls: int
    successes: int
    failures: int
    slow_calls: int
    ignored: int
    rejected: int
    stale: int
    consecutive_failures: int
    window_calls: int
    failure_rate: float
    times_opened: int
    open_remaining: float | None


class BreakerStateMachine:
    """The breaker's logic; see the module docstring for the states."""

    def __init__(self, config: BreakerConfig | None = None, *, name: str = "breaker") -> None:
        self.config = config if config is not None else BreakerConfig()
        self.name = name
        self._state = _CLOSED
        self._generation = 0
        self._serial = 0
        self._window: deque[bool] = deque(maxlen=self.config.window_size)
        self._window_failures = 0
        self._consecutive = 0
        self._open_until = 0.0
        self._reopens = 0
        self._probes: dict[int, float] = {}
        self._probe_successes = 0
        self._changes: list[StateChange] = []
        # A plain attribute, not a property: the breaker reads it after every call.
        self.has_changes = False
        """Whether transitions are waiting for :meth:`drain_changes`."""
        self._calls = self._successes = self._failures = self._slow = 0
        self._ignored = self._rejected = self._stale = self._times_opened = 0

    # -- state ---------------------------------------------------------------

    def state(self, now: float) -> BreakerState:
        """The current state, after applying time-driven transitions."""
        self._tick(now)
        return self._state

    def drain_changes(self) -> list[StateChange]:
        """Return and forget the transitions since the last call (for listeners)."""
        if not self._changes:
            return []
        changes, self._changes = self._changes, []
        self.has_changes = False
        return changes

    def _transition(self, new: BreakerState, now: float, reason: str) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._generation += 1
        self._probes.clear()
        self._probe_successes = 0
        if new is _OPEN:
            self._times_opened += 1
            cfg = self.config
            duration = min(
                cfg.open_duration * cfg.open_backoff**self._reopens, cfg.max_open_duration
            )
            self._open_until = now + duration
            self._reopens += 1
        elif new is _CLOSED:
            self._reopens = 0
            self._reset_window()
        self._changes.append(StateChange(self.name, old, new, now, reason))
        self.has_changes = True

    def _reset_window(self) -> None:
        self._window.clear()
        self._window_failures = 0
        self._consecutive = 0

    def _tick(self, now: float) -> None:
        if self._state is _OPEN and now >= self._open_until:
            self._transition(_HALF_OPEN, now, "open duration elapsed")
        if self._state is _HALF_OPEN and self._probes:
            timeout = self.config.probe_timeout
            if any(now - started >= timeout for started in self._probes.values()):
                self._failures += 1
                self._transition(_OPEN, now, "probe timed out")
                # The open period may already be over if time jumped far ahead.
                self._tick(now)

    # -- calls ---------------------------------------------------------------

    def acquire(self, now: float) -> Permit:
        """Ask to make a call; raises :class:`CircuitOpenError` when refused."""
        if self._state is _CLOSED:  # the hot path: nothing time-driven to apply
            self._serial += 1
            return _new_permit((self._generation, now, False, self._serial))
        self._tick(now)
        state = self._state
        if state is _OPEN:
            self._rejected += 1
            raise CircuitOpenError(self.name, state.value, max(0.0, self._open_until - now))
        if state is _FORCED_OPEN:
            self._rejected += 1
            raise CircuitOpenError(self.name, state.value, None)
        self._serial += 1
        if state is _HALF_OPEN:
            if len(self._probes) >= self.config.half_open_max_probes:
                self._rejected += 1
                oldest = min(self._probes.values())
                retry = max(0.0, oldest + self.config.probe_timeout - now)
                raise CircuitOpenError(self.name, state.value, retry)
            self._probes[self._serial] = now
            return Permit(self._generation, now, True, self._serial)
        return Permit(self._generation, now, False, self._serial)

    def record(self, permit: Permit, outcome: Outcome, now: float) -> None:
        """Report how the call made under ``permit`` ended."""
        if self._state is not _CLOSED:
            self._tick(now)
        cfg = self.config
        slow = cfg.slow_call_duration
        if outcome is _SUCCESS and slow is not None and now - permit.started >= slow:
            self._slow += 1
            outcome = _FAILURE
        self._calls += 1
        if outcome is _IGNORE:
            self._ignored += 1
        elif outcome is _SUCCESS:
            self._successes += 1
        else:
            self._failures += 1
        if permit.probe and self._probes.pop(permit.serial, None) is None:
            self._stale += 1
            return
        if permit.generation != self._generation:
            self._stale += 1
            return
        if self._state is _HALF_OPEN:
            if outcome is _FAILURE:
                self._transition(_OPEN, now, "probe failed")
            elif outcome is _SUCCESS:
                self._probe_successes += 1
                if self._probe_successes >= cfg.half_open_successes:
                    self._transition(_CLOSED, now, "probes succeeded")
            return
        if self._state is not _CLOSED or outcome is _IGNORE:
            return
        failed = outcome is _FAILURE
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._window_failures -= 1
        self._window.append(failed)
        self._window_failures += failed
        self._consecutive = self._consecutive + 1 if failed else 0
        if cfg.failure_threshold is not None and self._consecutive >= cfg.failure_threshold:
            self._transition(_OPEN, now, f"{self._consecutive} consecutive failures")
            return
        rate_limit = cfg.failure_rate_threshold
        if rate_limit is not None and len(self._window) >= cfg.minimum_calls:
            rate = self._window_failures / len(self._window)
            if rate >= rate_limit:
                self._transition(
                    _OPEN,
                    now,
                    f"failure rate {rate:.0%} over {len(self._window)} calls",
                )

    # -- manual control --------------------------------------------------------

    def force_open(self, now: float) -> None:
        """Refuse every call until :meth:`reset`."""
        self._transition(_FORCED_OPEN, now, "forced open")

    def disable(self, now: float) -> None:
        """Allow every call and record nothing until :meth:`reset`."""
        self._transition(_DISABLED, now, "disabled")

    def reset(self, now: float) -> None:
        """Back to CLOSED with an empty window and the base open duration."""
        self._transition(_CLOSED, now, "reset")
        self._reset_window()
        self._reopens = 0

    def trip(self, now: float, reason: str = "tripped by hand") -> None:
        """Open now, as if the trip condition had been met."""
        self._transition(_OPEN, now, reason)

    # -- metrics ---------------------------------------------------------------

    def metrics(self, now: float) -> BreakerMetrics:
        """A snapshot of the counters."""
        self._tick(now)
        n = len(self._window)
        return BreakerMetrics(
            name=self.name,
            state=self._state,
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            slow_calls=self._slow,
            ignored=self._ignored,
            rejected=self._rejected,
            stale=self._stale,
            consecutive_failures=self._consecutive,
            window_calls=n,
            failure_rate=self._window_failures / n if n else 0.0,
            times_opened=self._times_opened,
            open_remaining=(max(0.0, self._open_until - now) if self._state is _OPEN else None),
        )
