"""AttemptTimers: the one-handle-per-client deadlines behind ApiClient's attempt timeout.

Real tasks on the running loop; each test asserts which attempts were cancelled by
their deadline and that a cancellation from outside is not taken for a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from fokha_integration.http._client_mw import AttemptDeadline, AttemptTimers
from tests.support import timeout


async def _attempt(timers: AttemptTimers, seconds: float, work: float) -> str:
    """Run ``work`` seconds under a ``seconds`` deadline: "ok", "timeout" or re-raise."""
    entry = timers.start(seconds)
    try:
        await asyncio.sleep(work)
    except asyncio.CancelledError:
        if not entry.expired():
            raise
        return "timeout"
    finally:
        timers.finish(entry)
    return "ok"


async def test_only_the_attempts_past_their_deadline_are_cancelled() -> None:
    """Ten concurrent attempts, every other one too slow: exactly those five time out."""
    timers = AttemptTimers()
    unit = timeout(0.05)
    results = await asyncio.gather(
        *(_attempt(timers, 2 * unit, 6 * unit if i % 2 else 0.0) for i in range(10))
    )
    assert results == ["ok", "timeout"] * 5


async def test_a_shorter_deadline_after_a_longer_one_still_fires_on_time() -> None:
    """A 0.05 s deadline queued behind a 10 s one fires at 0.05 s, not at 10 s."""
    timers = AttemptTimers()
    long = asyncio.ensure_future(_attempt(timers, 10.0, 0.2))
    await asyncio.sleep(0)  # the long attempt starts first
    started = asyncio.get_running_loop().time()
    assert await _attempt(timers, 0.05, 5.0) == "timeout"
    assert asyncio.get_running_loop().time() - started < timeout(1.0)
    assert await long == "ok"


async def test_deadlines_keep_firing_after_the_queue_drains() -> None:
    """Attempts in sequence (the queue empties between them): each slow one times out."""
    timers = AttemptTimers()
    unit = timeout(0.02)
    for _ in range(3):
        assert await _attempt(timers, unit, 0.0) == "ok"
        assert await _attempt(timers, unit, 10 * unit) == "timeout"


async def test_an_outside_cancellation_is_not_a_timeout() -> None:
    """Cancelling the attempt's task from outside propagates as CancelledError."""
    timers = AttemptTimers()
    task = asyncio.ensure_future(_attempt(timers, 10.0, 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("the outside cancellation was swallowed")
    assert task.cancelled()


async def test_a_finished_attempt_is_never_cancelled_later() -> None:
    """A deadline whose attempt finished does not cancel the task's later work."""
    timers = AttemptTimers()
    unit = timeout(0.02)
    entry = timers.start(unit)
    timers.finish(entry)
    await asyncio.sleep(3 * unit)  # past the deadline: nothing must cancel this sleep
    assert not entry.fired and isinstance(entry, AttemptDeadline)


def test_one_timers_object_serves_two_event_loops_in_turn() -> None:
    """The same timers used under two asyncio.run() calls: deadlines fire in both."""
    timers = AttemptTimers()
    for _ in range(2):
        assert asyncio.run(_attempt(timers, 0.02, 1.0)) == "timeout"


async def test_a_short_deadline_after_a_finished_long_one_fires_on_time() -> None:
    """A 10 s attempt that finished leaves the queue empty; a 0.05 s deadline started
    next fires at 0.05 s, not when the finished attempt's deadline would have."""
    timers = AttemptTimers()
    assert await _attempt(timers, 10.0, 0.0) == "ok"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _attempt(timers, timeout(0.05), 5.0) == "timeout"
    assert loop.time() - started < timeout(1.0)


async def test_a_finished_attempt_does_not_keep_its_task_alive() -> None:
    """Behind one slow attempt, attempts that finished are not kept alive (with their
    results) by the deadline queue until the slow one's deadline."""
    timers = AttemptTimers()
    slow = asyncio.ensure_future(_attempt(timers, timeout(5.0), timeout(5.0)))
    await asyncio.sleep(0)  # the slow attempt is queued first
    finished = asyncio.ensure_future(_attempt(timers, timeout(5.0), 0.0))
    assert await finished == "ok"
    ref = weakref.ref(finished)
    del finished
    for _ in range(3):  # the loop's own wake-up callbacks still hold it for a turn
        await asyncio.sleep(0)
    gc.collect()
    try:
        assert ref() is None
    finally:
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
