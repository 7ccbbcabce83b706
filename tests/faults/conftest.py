"""Fixtures shared by the fault-injection suite (``tests/faults``)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import pytest

from tests.faults._lag import LoopLagSampler


@pytest.fixture
async def loop_lag() -> AsyncIterator[LoopLagSampler]:
    """A loop-lag sampler running for the whole test; the test fails if the loop
    was blocked longer than 100 ms (scaled).

    The objects the test session built up before this test are frozen out of the
    garbage collector while it runs: a full collection over a long pytest session's
    heap alone can pause the loop ~100 ms, a cost of the test runner, not of the code
    under test (whose own objects are still collected as usual).
    """
    gc.collect()
    gc.freeze()
    sampler = LoopLagSampler()
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
        gc.unfreeze()
    sampler.check()
