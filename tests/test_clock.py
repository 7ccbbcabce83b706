"""ManualClock: advance wakes sleepers in deadline order; SystemClock is real time."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import SYSTEM_CLOCK, Clock, ManualClock


async def test_advance_wakes_due_sleepers_in_order() -> None:
    """Sleepers wake when their deadline is reached, earliest first, not before."""
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 3), ("a", 1), ("b", 2))]
    await clock.wait_for_sleepers(3)
    clock.advance(1.5)
    await asyncio.sleep(0)
    assert woke == ["a"]
    clock.advance(5)
    await asyncio.gather(*tasks)
    assert woke == ["a", "b", "c"]
    assert clock.sleepers == 0


async def test_wall_and_monotonic_move_together() -> None:
    """advance moves both clocks; set_wall steps only the wall clock."""
    clock = ManualClock(monotonic=10, wall=1000)
    clock.advance(2)
    assert (clock.monotonic(), clock.time()) == (12, 1002)
    clock.set_wall(5000)
    assert (clock.monotonic(), clock.time()) == (12, 5000)
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_cancelled_sleeper_is_dropped() -> None:
    """A cancelled sleep does not count as a sleeper and does not break advance()."""
    clock = ManualClock()
    task = asyncio.create_task(clock.sleep(5))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    clock.advance(10)


async def test_zero_sleep_yields() -> None:
    """sleep(0) returns without advancing time."""
    clock = ManualClock()
    await asyncio.wait_for(clock.sleep(0), 1)
    assert clock.monotonic() == 0


async def test_wait_for_sleepers_times_out() -> None:
    """wait_for_sleepers gives up after its (real) timeout."""
    with pytest.raises(TimeoutError):
        await ManualClock().wait_for_sleepers(1, timeout=0.05)


def test_clocks_satisfy_the_protocol() -> None:
    """Both clocks are Clock instances."""
    assert isinstance(SYSTEM_CLOCK, Clock)
    assert isinstance(ManualClock(), Clock)
