"""Hypothesis drives the breaker state machine through random calls and time."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fokha_integration.errors import CircuitOpenError
from fokha_integration.resilience import (
    BreakerConfig,
    BreakerState,
    BreakerStateMachine,
    Outcome,
    Permit,
)

ALLOWED = {
    (BreakerState.CLOSED, BreakerState.OPEN),
    (BreakerState.OPEN, BreakerState.HALF_OPEN),
    (BreakerState.HALF_OPEN, BreakerState.OPEN),
    (BreakerState.HALF_OPEN, BreakerState.CLOSED),
}

# Both trip rules on, small numbers, so short runs reach every state.
TRIPS: dict[str, Any] = {
    "failure_threshold": 3,
    "failure_rate_threshold": 0.5,
    "window_size": 6,
    "minimum_calls": 4,
    "half_open_max_probes": 2,
    "half_open_successes": 2,
}


class BreakerMachine(RuleBasedStateMachine):
    """Invariants that hold whatever happens."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = BreakerConfig(
            **TRIPS, open_duration=5, open_backoff=2, max_open_duration=40, probe_timeout=7
        )
        self.m = BreakerStateMachine(self.cfg, name="prop")
        self.now = 0.0
        self.permits: list[Permit] = []
        self.outstanding_probes = 0

    @rule(dt=st.floats(min_value=0, max_value=12))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def acquire(self) -> None:
        state = self.m.state(self.now)
        try:
            permit = self.m.acquire(self.now)
        except CircuitOpenError as exc:
            assert state in (BreakerState.OPEN, BreakerState.HALF_OPEN)
            assert exc.retry_after is not None and exc.retry_after >= 0
            return
        assert state in (BreakerState.CLOSED, BreakerState.HALF_OPEN)
        self.permits.append(permit)

    @precondition(lambda self: self.permits)
    @rule(i=st.integers(min_value=0), outcome=st.sampled_from(list(Outcome)))
    def finish(self, i: int, outcome: Outcome) -> None:
        permit = self.permits.pop(i % len(self.permits))
        self.m.record(permit, outcome, self.now)

    @invariant()
    def transitions_are_legal(self) -> None:
        for change in self.m.drain_changes():
            assert (change.old, change.new) in ALLOWED, change

    @invariant()
    def probes_within_limit(self) -> None:
        self.m.state(self.now)
        assert len(self.m._probes) <= self.cfg.half_open_max_probes

    @invariant()
    def open_remaining_is_bounded(self) -> None:
        metrics = self.m.metrics(self.now)
        if metrics.state is BreakerState.OPEN:
            assert metrics.open_remaining is not None
            assert 0 <= metrics.open_remaining <= self.cfg.max_open_duration + 1e-9
        assert 0.0 <= metrics.failure_rate <= 1.0


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)

# Calls and waits for the two side-by-side tests: (action, amount); "hold" takes a
# permit (or token) to finish later, possibly in another state.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["success", "failure", "ignore", "wait", "hold"]),
        st.floats(min_value=0, max_value=8),
    ),
    max_size=60,
)
