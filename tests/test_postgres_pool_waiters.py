"""Review finding (fixed): a connection handed to a waiter that is cancelled in the
same loop turn was lost on Python >= 3.12 (the pool's capacity shrank for good).

``ConnectionPool.acquire`` waits with ``asyncio.wait_for(fut, acquire_timeout)``;
``release`` hands the connection over with ``fut.set_result(conn)``. From Python 3.12
``wait_for`` is ``async with timeout(): await fut``: when the waiting task is
cancelled after the result was set but before it ran, ``CancelledError`` is raised
and the handed-over connection is dropped on the floor (``_size`` still counts it;
it is never released nor closed). 3.10 and 3.11 return the result instead.
"""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration.errors import BackendUnavailableError

pytest.importorskip("asyncpg")

from fokha_integration._postgres import ConnectionPool, PostgresPool


async def test_a_cancelled_waiter_does_not_swallow_the_handed_over_connection(
    postgres_dsn: str,
) -> None:
    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=1, acquire_timeout=0.5))
    await pool.open()
    try:
        conn = await pool.acquire()
        waiting = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)  # it waits for a free connection
        pool.release(conn)  # handed straight to the waiter...
        waiting.cancel()  # ...whose caller gives up in the same loop turn
        try:
            got = await waiting
        except asyncio.CancelledError:
            pass
        else:
            pool.release(got)  # 3.10/3.11: the waiter got it; give it back
        # The one connection is free again, whichever way the waiter ended.
        try:
            again = await pool.acquire()
        except BackendUnavailableError:
            pytest.fail("the pool's only connection was lost with the cancelled waiter")
        pool.release(again)
    finally:
        await pool.close()
