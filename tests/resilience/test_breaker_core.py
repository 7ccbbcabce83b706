"""The sans-I/O breaker state machine, driven with plain numbers for time."""

from __future__ import annotations

import pytest

from fokha_integration.errors import CircuitOpenError, ConfigError
from fokha_integration.resilience import (
    BreakerConfig,
    BreakerState,
    BreakerStateMachine,
    Outcome,
)

S, F, I = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORE


def machine(**kw: object) -> BreakerStateMachine:
    return BreakerStateMachine(BreakerConfig(**kw), name="t")  # type: ignore[arg-type]


def call(m: BreakerStateMachine, outcome: Outcome, now: float = 0.0, took: float = 0.0) -> None:
    permit = m.acquire(now)
    m.record(permit, outcome, now + took)


def test_trips_after_consecutive_failures() -> None:
    """N consecutive failures open the breaker; a success in between resets the count."""
    m = machine(failure_threshold=3)
    call(m, F)
    call(m, F)
    call(m, S)
    call(m, F)
    call(m, F)
    assert m.state(0) is BreakerState.CLOSED
    call(m, F)
    assert m.state(0) is BreakerState.OPEN
    changes = m.drain_changes()
    assert [(c.old, c.new) for c in changes] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert "3 consecutive failures" in changes[0].reason


def test_open_refuses_with_retry_after() -> None:
    """While open, acquire raises CircuitOpenError saying how long is left."""
    m = machine(failure_threshold=1, open_duration=10)
    call(m, F, now=100)
    with pytest.raises(CircuitOpenError) as info:
        m.acquire(104)
    assert info.value.state == "open"
    assert info.value.retry_after == pytest.approx(6)
    assert m.metrics(104).rejected == 1


def test_open_becomes_half_open_after_duration() -> None:
    """After open_duration the breaker lets a probe through."""
    m = machine(failure_threshold=1, open_duration=10)
    call(m, F, now=0)
    assert m.state(9.999) is BreakerState.OPEN
    assert m.state(10) is BreakerState.HALF_OPEN


def test_half_open_limits_concurrent_probes() -> None:
    """Half-open allows at most K probes at once; the K+1th is refused."""
    m = machine(failure_threshold=1, open_duration=1, half_open_max_probes=2, half_open_successes=2)
    call(m, F)
    p1 = m.acquire(1)
    p2 = m.acquire(1)
    assert p1.probe and p2.probe
    with pytest.raises(CircuitOpenError) as info:
        m.acquire(1)
    assert info.value.state == "half_open"
    m.record(p1, S, 1.1)
    assert m.state(1.1) is BreakerState.HALF_OPEN  # needs 2 successes
    p3 = m.acquire(1.1)  # p1's slot is free again
    m.record(p2, S, 1.2)
    assert m.state(1.2) is BreakerState.CLOSED
    m.record(p3, S, 1.3)  # a probe of the closed generation counts as stale
    assert m.metrics(1.3).stale == 1


def test_half_open_probe_failure_reopens_with_growing_duration() -> None:
    """A failed probe reopens, and the open duration grows by open_backoff up to the cap."""
    m = machine(failure_threshold=1, open_duration=10, open_backoff=2, max_open_duration=25)
    call(m, F, now=0)  # open until 10
    call(m, F, now=10)  # probe fails: open for 20, until 30
    assert m.state(29.9) is BreakerState.OPEN
    assert m.state(30) is BreakerState.HALF_OPEN
    call(m, F, now=30)  # open for min(40, 25) = 25, until 55
    assert m.state(54.9) is BreakerState.OPEN
    call(m, S, now=55)  # closes, and the duration resets
    assert m.state(55) is BreakerState.CLOSED
    call(m, F, now=60)
    assert m.metrics(60).open_remaining == pytest.approx(10)


def test_probe_timeout_counts_as_failure() -> None:
    """A probe that never reports is treated as failed after probe_timeout."""
    m = machine(failure_threshold=1, open_duration=5, probe_timeout=3)
    call(m, F, now=0)
    hung = m.acquire(5)
    with pytest.raises(CircuitOpenError) as info:
        m.acquire(6)
    assert info.value.retry_after == pytest.approx(2)
    assert m.state(8) is BreakerState.OPEN
    assert m.drain_changes()[-1].reason == "probe timed out"
    m.record(hung, S, 9)  # the late report changes nothing
    assert m.state(9) is BreakerState.OPEN
    assert m.metrics(9).stale == 1


def test_rate_based_trip_waits_for_minimum_calls() -> None:
    """The failure-rate rule applies only once minimum_calls were recorded in the window."""
    m = machine(failure_threshold=None, failure_rate_threshold=0.5, window_size=10, minimum_calls=4)
    call(m, F)
    call(m, F)
    call(m, F)
    assert m.state(0) is BreakerState.CLOSED  # 3 calls < minimum 4, even at 100%
    call(m, S)
    assert m.state(0) is BreakerState.OPEN  # 3/4 = 75% >= 50%


def test_rate_window_slides() -> None:
    """Old outcomes leave the count window, so the rate reflects only recent calls."""
    m = machine(failure_threshold=None, failure_rate_threshold=0.5, window_size=4, minimum_calls=4)
    for outcome in (F, S, S, S, S, F):
        call(m, outcome)
    metrics = m.metrics(0)
    assert metrics.window_calls == 4
    assert metrics.failure_rate == pytest.approx(0.25)
    assert metrics.state is BreakerState.CLOSED
    call(m, F)  # window: S, S, F, F -> 50%
    assert m.state(0) is BreakerState.OPEN


def test_ignored_outcomes_do_not_count() -> None:
    """IGNORE neither trips nor resets the consecutive-failure count."""
    m = machine(failure_threshold=2)
    call(m, F)
    for _ in range(10):
        call(m, I)
    assert m.state(0) is BreakerState.CLOSED
    call(m, F)
    assert m.state(0) is BreakerState.OPEN
    assert m.metrics(0).ignored == 10


def test_slow_success_counts_as_failure() -> None:
    """A success slower than slow_call_duration is recorded as a failure."""
    m = machine(failure_threshold=2, slow_call_duration=1.0)
    call(m, S, took=1.5)
    call(m, S, took=0.5)
    call(m, S, took=2.0)
    assert m.state(10) is BreakerState.CLOSED
    call(m, S, took=2.0)
    assert m.state(10) is BreakerState.OPEN
    assert m.metrics(10).slow_calls == 3


def test_stale_permit_from_closed_does_not_affect_half_open() -> None:
    """A call started while closed and finished after the breaker opened is stale."""
    m = machine(failure_threshold=1, open_duration=1)
    slow = m.acquire(0)
    call(m, F, now=0)
    assert m.state(2) is BreakerState.HALF_OPEN
    m.record(slow, S, 2)
    assert m.state(2) is BreakerState.HALF_OPEN
    assert m.metrics(2).stale == 1


def test_forced_open_and_disabled() -> None:
    """forced_open refuses with no retry hint; disabled allows all and never trips."""
    m = machine(failure_threshold=1)
    m.force_open(0)
    with pytest.raises(CircuitOpenError) as info:
        m.acquire(1000)
    assert info.value.retry_after is None
    assert info.value.state == "forced_open"
    m.disable(0)
    for _ in range(5):
        call(m, F)
    assert m.state(0) is BreakerState.DISABLED
    m.reset(0)
    assert m.state(0) is BreakerState.CLOSED
    states = [c.new for c in m.drain_changes()]
    assert states == [BreakerState.FORCED_OPEN, BreakerState.DISABLED, BreakerState.CLOSED]


def test_config_is_validated() -> None:
    """Nonsense configuration is refused with the field named."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(minimum_calls=30, window_size=10)
    assert info.value.field == "minimum_calls"
    with pytest.raises(ConfigError):
        BreakerConfig(failure_threshold=None, failure_rate_threshold=None)
    with pytest.raises(ConfigError):
        BreakerConfig(failure_rate_threshold=1.5)
