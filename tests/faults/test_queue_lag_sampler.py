"""The loop-lag sampler the fault tests rely on: it sees a blocked loop, CPU-bound
or in a blocking call, and stays quiet on an idle one."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults._lag import LoopLagSampler


async def _sampled(block: float) -> LoopLagSampler:
    sampler = LoopLagSampler()
    sampler.start()
    await asyncio.sleep(0.05)  # let a few samples come in: the thing measured is time
    if block:
        time.sleep(block)  # a blocking call on the loop, on purpose
    end = time.monotonic() + block
    while time.monotonic() < end:  # then CPU-bound work on the loop, on purpose
        pass
    await asyncio.sleep(0.05)
    sampler.stop()
    return sampler


async def test_a_blocked_loop_is_seen() -> None:
    """A 250 ms blocking call and 250 ms of CPU work on the loop both fail the check."""
    sampler = await _sampled(0.25)
    assert sampler.max_lag >= 0.2
    with pytest.raises(AssertionError, match="blocked"):
        sampler.check()


async def test_an_idle_loop_passes() -> None:
    """Sampling an idle loop finds no lag beyond the bound."""
    sampler = await _sampled(0.0)
    assert sampler.samples > 0
    sampler.check()
