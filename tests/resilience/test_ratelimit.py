"""RateLimiter: token bucket refill, burst, FIFO waiting and timeouts, on a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import ManualClock
from fokha_integration.errors import ConfigError, OperationTimeoutError
from fokha_integration.resilience import RateLimiter


def test_burst_then_refill() -> None:
    """The bucket starts full, empties, and refills at `rate` per second."""
    clock = ManualClock()
    rl = RateLimiter(rate=2, burst=3, clock=clock)
    assert [rl.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert rl.try_acquire()
    assert not rl.try_acquire()
    clock.advance(10)
    assert rl.tokens == 3  # capped at burst


async def test_acquire_waits_exactly_as_long_as_needed() -> None:
    """acquire() sleeps on the clock until the tokens have refilled."""
    clock = ManualClock()
    rl = RateLimiter(rate=4, burst=1, clock=clock)
    await rl.acquire()
    task = asyncio.create_task(rl.acquire())
    await clock.wait_for_sleepers(1)
    assert not task.done()
    clock.advance(0.25)
    await asyncio.wait_for(task, 1)
    assert clock.monotonic() == 0.25


async def test_waiters_are_served_in_order() -> None:
    """A later small request does not overtake an earlier large one."""
    clock = ManualClock()
    rl = RateLimiter(rate=1, burst=5, clock=clock)
    await rl.acquire(5)
    order: list[str] = []

    async def take(name: str, n: float) -> None:
        await rl.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 4))
    await clock.wait_for_sleepers(1)
    small = asyncio.create_task(take("small", 1))
    await asyncio.sleep(0)
    assert not rl.try_acquire()  # someone is queued
    await clock.run_until_idle()
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_timeout_fails_fast_when_wait_too_long() -> None:
    """acquire(timeout=) raises at once if the needed wait exceeds the timeout."""
    clock = ManualClock()
    rl = RateLimiter(rate=1, burst=1, clock=clock)
    await rl.acquire()
    with pytest.raises(OperationTimeoutError) as info:
        await rl.acquire(timeout=0.5)
    assert info.value.timeout == 0.5
    assert clock.monotonic() == 0  # it did not sleep first


def test_bad_arguments() -> None:
    """Non-positive rates and requests larger than the burst are refused."""
    with pytest.raises(ConfigError):
        RateLimiter(rate=0)
    rl = RateLimiter(rate=1, burst=2, clock=ManualClock())
    with pytest.raises(ConfigError):
        rl.try_acquire(3)
