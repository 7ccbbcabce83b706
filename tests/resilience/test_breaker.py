"""The asyncio circuit breaker: call, context manager, decorator, listeners, registry."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import ManualClock
from fokha_integration.errors import CircuitOpenError, ConfigError
from fokha_integration.resilience import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Outcome,
    StateChange,
)


class Boom(Exception):
    pass


class NotFound(Exception):
    pass


async def fail() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


async def test_call_trips_and_recovers_with_manual_clock() -> None:
    """Failures through call() open the breaker; after open_duration a probe closes it."""
    clock = ManualClock()
    changes: list[StateChange] = []
    b = CircuitBreaker("svc", failure_threshold=2, open_duration=5, clock=clock)
    b.add_listener(changes.append)
    for _ in range(2):
        with pytest.raises(Boom):
            await b.call(fail)
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    clock.advance(5)
    assert await b.call(ok) == "ok"
    assert b.state is BreakerState.CLOSED
    assert [c.new for c in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


async def test_context_manager_records_outcome() -> None:
    """`async with breaker` counts an exception leaving the block as a failure."""
    b = CircuitBreaker("ctx", failure_threshold=1, clock=ManualClock())
    async with b:
        pass
    with pytest.raises(Boom):
        async with b:
            raise Boom
    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        async with b:
            pass


async def test_context_manager_is_safe_across_concurrent_tasks() -> None:
    """Concurrent `async with` blocks on one breaker keep their own permits."""
    clock = ManualClock()
    b = CircuitBreaker("conc", failure_threshold=100, clock=clock)
    gate = asyncio.Event()

    async def worker(fails: bool) -> None:
        try:
            async with b:
                await gate.wait()
                if fails:
                    raise Boom
        except Boom:
            pass

    tasks = [asyncio.create_task(worker(i % 2 == 0)) for i in range(10)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    m = b.metrics()
    assert (m.calls, m.failures, m.successes, m.stale) == (10, 5, 5, 0)


async def test_decorator_guards_calls() -> None:
    """A decorated coroutine function goes through the breaker."""
    b = CircuitBreaker("deco", failure_threshold=1, clock=ManualClock())

    @b
    async def flaky(x: int) -> int:
        if x < 0:
            raise Boom
        return x * 2

    assert await flaky(2) == 4
    with pytest.raises(Boom):
        await flaky(-1)
    with pytest.raises(CircuitOpenError):
        await flaky(3)


async def test_ignored_and_classified_errors() -> None:
    """ignore_on errors and cancellation do not count; a classifier overrides the default."""
    b = CircuitBreaker("ign", failure_threshold=1, ignore_on=(NotFound,), clock=ManualClock())

    async def not_found() -> None:
        raise NotFound

    for _ in range(3):
        with pytest.raises(NotFound):
            await b.call(not_found)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await b.call(cancelled)
    assert b.state is BreakerState.CLOSED
    assert b.metrics().ignored == 4

    c = CircuitBreaker(
        "cls",
        failure_threshold=1,
        classifier=lambda e: Outcome.SUCCESS if isinstance(e, Boom) else Outcome.FAILURE,
        clock=ManualClock(),
    )
    with pytest.raises(Boom):
        await c.call(fail)
    assert c.state is BreakerState.CLOSED


async def test_failing_listener_does_not_break_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises is logged; state changes still happen and others still run."""
    seen: list[StateChange] = []

    def bad(_: StateChange) -> None:
        raise RuntimeError("listener bug")

    b = CircuitBreaker(
        "lst", failure_threshold=1, clock=ManualClock(), listeners=(bad, seen.append)
    )
    with pytest.raises(Boom):
        await b.call(fail)
    assert b.state is BreakerState.OPEN
    assert len(seen) == 1
    assert "listener" in caplog.text


def test_registry_creates_once_with_defaults() -> None:
    """The registry returns one breaker per name, built from defaults plus overrides."""
    clock = ManualClock()
    reg = BreakerRegistry(clock=clock, failure_threshold=7)
    a = reg.get("a")
    assert reg.get("a") is a
    b = reg.get("b", open_duration=1.0)
    assert a.config.failure_threshold == 7
    assert b.config.open_duration == 1.0
    assert "a" in reg and len(reg) == 2
    assert set(reg.metrics()) == {"a", "b"}
    assert {x.name for x in reg} == {"a", "b"}


def test_config_and_keywords_are_exclusive() -> None:
    """Passing both config= and config keywords is an error."""
    from fokha_integration.resilience import BreakerConfig

    with pytest.raises(ConfigError, match="not both"):
        CircuitBreaker("x", config=BreakerConfig(), failure_threshold=3)


async def test_half_open_probe_limit_and_timeout_with_manual_clock() -> None:
    """Half-open lets K probes run at once; a hung probe reopens after probe_timeout."""
    clock = ManualClock()
    b = CircuitBreaker(
        "probe",
        failure_threshold=1,
        open_duration=10,
        half_open_max_probes=2,
        probe_timeout=4,
        clock=clock,
    )
    with pytest.raises(Boom):
        await b.call(fail)
    clock.advance(10)
    hang = asyncio.Event()

    async def hung() -> None:
        await hang.wait()

    probes = [asyncio.create_task(b.call(hung)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)  # the third concurrent probe is refused
    assert info.value.state == "half_open"
    clock.advance(4)
    assert b.state is BreakerState.OPEN  # the hung probes timed out
    hang.set()
    await asyncio.gather(*probes)
    assert b.state is BreakerState.OPEN  # their late success changes nothing
    assert b.metrics().stale == 2
