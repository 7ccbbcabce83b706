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


async def _wait_until_not_running(dsn: str, marker: str) -> None:
    """Wait (bounded) until no server backend runs a statement containing ``marker``."""
    import asyncpg

    from tests.support import timeout

    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + timeout(10)
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
            marker,
        ):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the server still runs the statement marked {marker}")
            await asyncio.sleep(0.05)  # polling the server's view: no event to wait on
    finally:
        await conn.close()


async def test_a_statement_past_command_timeout_is_cancelled_on_the_server(
    postgres_dsn: str,
) -> None:
    """The pool's watchdog ends a statement at command_timeout with
    BackendUnavailableError, the server gets the cancel request (the statement stops
    there, not 30 s later), and the pool goes on with a fresh connection."""
    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=1, command_timeout=0.5))
    await pool.open()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BackendUnavailableError, match=r"slow: .*command_timeout=0.5"):
            await pool.fetchrow("slow", "SELECT pg_sleep(30) /* watchdog-1 */")
        assert 0.5 <= loop.time() - started < 5
        await _wait_until_not_running(postgres_dsn, "watchdog-1")
        row = await asyncio.wait_for(pool.fetchrow("next", "SELECT 41 + 1 AS n"), 10)
        assert row["n"] == 42
        # Statements that end in time are not touched, however many run.
        for _ in range(20):
            await pool.execute("quick", "SELECT pg_sleep(0.01)")
        # A lease block (the migration's) is bounded as a whole, the same way.
        with pytest.raises(BackendUnavailableError, match=r"lease: .*command_timeout=0.5"):
            async with pool.lease() as conn:
                await conn.execute("SELECT pg_sleep(30) /* watchdog-3 */")
        await _wait_until_not_running(postgres_dsn, "watchdog-3")
        assert (await pool.fetchrow("after", "SELECT 1 AS n"))["n"] == 1
    finally:
        await pool.close()


async def test_a_cancelled_statement_is_cancelled_on_the_server(postgres_dsn: str) -> None:
    """Cancelling the caller's task (not a timeout) raises CancelledError, and the server
    gets the cancel request too."""
    pool = ConnectionPool(postgres_dsn, PostgresPool(min_size=1, max_size=2))
    await pool.open()
    try:
        slow = asyncio.create_task(pool.fetchrow("slow", "SELECT pg_sleep(30) /* watchdog-2 */"))
        await asyncio.sleep(0.2)  # let the statement reach the server
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await _wait_until_not_running(postgres_dsn, "watchdog-2")
    finally:
        await pool.close()
