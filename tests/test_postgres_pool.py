"""The PostgreSQL backends' connection pool: bounds, waits, and what it refuses to reuse."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration.errors import BackendUnavailableError, ClosedError

pytest.importorskip("asyncpg")

from fokha_integration._postgres import ConnectionPool, PostgresPool


async def test_bounded_wait_then_hand_over(postgres_dsn: str) -> None:
    """With max_size lent out, acquire waits at most acquire_timeout; a release hands the
    connection straight to a waiter."""
    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=2, acquire_timeout=0.3))
    await pool.open()
    try:
        a, b = await pool.acquire(), await pool.acquire()
        with pytest.raises(BackendUnavailableError, match="no free connection"):
            await pool.acquire()
        waiting = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)  # let it start waiting
        pool.release(a)
        assert await asyncio.wait_for(waiting, 5) is a
        pool.release(a)
        pool.release(b)
    finally:
        await pool.close()
    with pytest.raises(ClosedError):
        await pool.acquire()


async def test_a_cancelled_statement_does_not_return_its_connection(postgres_dsn: str) -> None:
    """A statement cancelled half-way drops its connection; the next call gets a clean one."""
    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=1))
    await pool.open()
    try:
        slow = asyncio.create_task(pool.fetchrow("slow", "SELECT pg_sleep(30)"))
        await asyncio.sleep(0.2)  # let the statement reach the server
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        row = await asyncio.wait_for(pool.fetchrow("next", "SELECT 41 + 1 AS n"), 10)
        assert row["n"] == 42
    finally:
        await pool.close()


async def test_server_errors_keep_the_connection_and_are_mapped(postgres_dsn: str) -> None:
    """A server-side error is a BackendError and the connection stays in the pool."""
    from fokha_integration.errors import BackendError

    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=1))
    await pool.open()
    try:
        first = await pool.acquire()
        pool.release(first)
        with pytest.raises(BackendError, match="typo"):
            await pool.fetchrow("typo", "SELEC 1")
        assert await pool.acquire() is first
    finally:
        await pool.close()
