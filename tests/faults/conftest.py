"""Fixtures shared by the fault-injection suite (``tests/faults``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.faults._lag import LoopLagSampler


@pytest.fixture
async def loop_lag() -> AsyncIterator[LoopLagSampler]:
    """A loop-lag sampler running for the whole test; the test fails if the loop
    was blocked longer than 100 ms (scaled)."""
    sampler = LoopLagSampler()
    sampler.start()
    yield sampler
    sampler.stop()
    sampler.check()
