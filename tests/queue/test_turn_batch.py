"""TurnBatch: what the stores gather over one event-loop turn."""

from __future__ import annotations

import asyncio

from fokha_integration.queue._store import TurnBatch


async def test_items_of_one_turn_are_flushed_together_on_the_next() -> None:
    flushed: list[list[int]] = []
    batch: TurnBatch[int] = TurnBatch(flushed.append, limit=100)
    for i in range(5):
        batch.add(i)
    assert flushed == [] and len(batch) == 5
    await asyncio.sleep(0)  # one loop turn: the scheduled flush runs
    assert flushed == [[0, 1, 2, 3, 4]] and len(batch) == 0
    batch.add(5)
    await asyncio.sleep(0)
    assert flushed == [[0, 1, 2, 3, 4], [5]]


async def test_a_full_batch_flushes_at_once_and_the_rest_starts_a_new_one() -> None:
    flushed: list[list[int]] = []
    batch: TurnBatch[int] = TurnBatch(flushed.append, limit=3)
    for i in range(7):
        batch.add(i)
    assert flushed == [[0, 1, 2], [3, 4, 5]]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flushed == [[0, 1, 2], [3, 4, 5], [6]]


async def test_flush_with_nothing_gathered_calls_nothing() -> None:
    flushed: list[list[int]] = []
    batch: TurnBatch[int] = TurnBatch(flushed.append, limit=3)
    batch.flush()
    batch.add(1)
    batch.flush()  # by hand (a store closing): the scheduled flush then finds nothing
    await asyncio.sleep(0)
    assert flushed == [[1]]
