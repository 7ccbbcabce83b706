"""Hypothesis drives the breaker state machine through random calls and time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fokha_integration.clock import ManualClock
from fokha_integration.errors import CircuitOpenError
from fokha_integration.resilience import (
    BreakerConfig,
    BreakerState,
    BreakerStateMachine,
    CircuitBreaker,
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


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, slow=st.sampled_from([None, 0.5]))
def test_record_success_is_record_of_a_success(
    steps: list[tuple[str, float]], slow: float | None
) -> None:
    """The short path for successes leaves exactly the state ``record(SUCCESS)`` leaves.

    Two machines get the same calls; one reports successes through
    ``record_success``, the other through ``record``. State, metrics and transitions
    must agree after every step (permits held across a state change included).
    """
    cfg = BreakerConfig(**TRIPS, open_duration=2, slow_call_duration=slow)
    fast, plain = BreakerStateMachine(cfg, name="x"), BreakerStateMachine(cfg, name="x")
    now = 0.0
    held: list[tuple[Permit, Permit]] = []
    for action, amount in steps:
        if action == "wait":
            now += amount
        elif action == "hold":
            try:
                a = fast.acquire(now)
            except CircuitOpenError:
                with pytest.raises(CircuitOpenError):
                    plain.acquire(now)
            else:
                held.append((a, plain.acquire(now)))
        else:
            if held and amount > 4:
                a, b = held.pop(0)  # finish a permit taken earlier, maybe in another state
            else:
                try:
                    a = fast.acquire(now)
                except CircuitOpenError:
                    with pytest.raises(CircuitOpenError):
                        plain.acquire(now)
                    continue
                b = plain.acquire(now)
            end = now + amount / 8
            if action == "success":
                fast.record_success(a, end)
            else:
                fast.record(a, Outcome.FAILURE if action == "failure" else Outcome.IGNORE, end)
            plain.record(
                b,
                {"success": Outcome.SUCCESS, "failure": Outcome.FAILURE}.get(
                    action, Outcome.IGNORE
                ),
                end,
            )
        assert fast.state(now) is plain.state(now)
        assert fast.metrics(now) == plain.metrics(now)
        assert fast.drain_changes() == plain.drain_changes()


class Succeeded(Exception):
    """Handed to the reference breaker for a success: see ``reference``."""


def reference(cfg: BreakerConfig, clock: ManualClock) -> CircuitBreaker:
    """A breaker whose every outcome goes through ``BreakerStateMachine.record``.

    ``release(permit, None)`` would take the success short cuts under test; the
    classifier turns a ``Succeeded`` into a plain ``record(SUCCESS)`` instead.
    """

    def classify(exc: BaseException) -> Outcome:
        if isinstance(exc, Succeeded):
            return Outcome.SUCCESS
        return Outcome.IGNORE if isinstance(exc, LookupError) else Outcome.FAILURE

    return CircuitBreaker("x", config=cfg, clock=clock, classifier=classify)


def raised(action: str) -> Exception | None:
    """What a call of this step raised: nothing for a success, else a failure or an
    error both breakers ignore."""
    if action == "failure":
        return RuntimeError("down")
    if action == "ignore":
        return LookupError("not counted")
    return None


def report(
    tok: CircuitBreaker, ref: CircuitBreaker, a: int | Permit, b: Permit, exc: Exception | None
) -> None:
    """Report one call to both: to ``tok`` by its token (or permit), to ``ref`` by permit."""
    if isinstance(a, int):
        if exc is None:
            tok.fast_success(a)
        else:
            tok.fast_failure(a, exc)
    else:
        tok.release(a, exc)
    ref.release(b, exc if exc is not None else Succeeded())


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, slow=st.sampled_from([None, 0.5]))
def test_token_protocol_counts_as_permits_do(
    steps: list[tuple[str, float]], slow: float | None
) -> None:
    """A breaker driven through ``fast_token`` ends where one driven by permits does.

    Two breakers on one manual clock get the same calls. The first takes a token
    whenever it offers one (CLOSED, untimed) and a permit otherwise; the second
    always takes permits. State, metrics and the transitions its listeners saw must
    agree after every step, calls held across a state change included.
    """
    clock = ManualClock()
    cfg = BreakerConfig(**TRIPS, open_duration=2, slow_call_duration=slow)
    seen: dict[str, list[tuple[BreakerState, BreakerState]]] = {"a": [], "b": []}

    def listener(name: str) -> Any:
        return lambda change: seen[name].append((change.old, change.new))

    tok = CircuitBreaker("x", config=cfg, clock=clock, ignore_on=(LookupError,))
    tok.add_listener(listener("a"))
    ref = reference(cfg, clock)
    ref.add_listener(listener("b"))
    if slow is None:
        assert tok.fast_token() is not None
    else:
        assert tok.fast_token() is None  # timed calls always need a permit

    def take() -> tuple[int | Permit, Permit] | None:
        token = tok.fast_token()
        a: int | Permit
        try:
            a = token if token is not None else tok.acquire()
        except CircuitOpenError:
            with pytest.raises(CircuitOpenError):
                ref.acquire()
            return None
        return a, ref.acquire()

    held: list[tuple[int | Permit, Permit]] = []
    for action, amount in steps:
        if action == "wait":
            clock.advance(amount)
        elif action == "hold":
            pair = take()
            if pair is not None:
                held.append(pair)
        else:
            pair = held.pop(0) if held and amount > 4 else take()
            if pair is None:
                continue
            a, b = pair
            clock.advance(amount / 8)
            report(tok, ref, a, b, raised(action))
        assert tok.state is ref.state
        assert tok.metrics() == ref.metrics()
        assert seen["a"] == seen["b"]


BURSTS = st.lists(
    st.tuples(st.sampled_from(["burst", "failure", "ignore", "wait", "look"]), st.integers(0, 15)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=BURSTS)
# A failure in the window, then more successes than the window holds at once, then a
# failure that pushes the window's oldest entry out: the applied run must have
# replaced every entry the failure could see.
@example(steps=[("burst", 4), ("failure", 0), ("burst", 10), ("failure", 0), ("look", 0)])
# Failures, then the successes that fill the window to minimum_calls at the failure
# rate threshold: the one that reaches minimum_calls must trip, not wait to be applied.
@example(steps=[("failure", 0), ("failure", 0), ("burst", 2), ("look", 0)])
def test_token_successes_applied_late_count_as_permits_do(steps: list[tuple[str, int]]) -> None:
    """Runs of token successes that nothing reads in between (so they are applied
    together, longer than the window or not) leave what the same calls through
    permits leave; the two are only compared now and then."""
    clock = ManualClock()
    cfg = BreakerConfig(**TRIPS, open_duration=2)
    tok = CircuitBreaker("x", config=cfg, clock=clock, ignore_on=(LookupError,))
    ref = reference(cfg, clock)
    for action, amount in steps:
        if action == "wait":
            clock.advance(amount / 2)
        elif action == "look":
            assert tok.metrics() == ref.metrics()
        else:
            for _ in range(amount if action == "burst" else 1):
                token = tok.fast_token()
                try:
                    a = token if token is not None else tok.acquire()
                except CircuitOpenError:
                    with pytest.raises(CircuitOpenError):
                        ref.acquire()
                    break
                report(tok, ref, a, ref.acquire(), raised(action))
    assert tok.metrics() == ref.metrics()
    assert tok.state is ref.state
