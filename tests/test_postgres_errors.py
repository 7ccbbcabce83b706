"""The asyncpg classification table, fed with real errors from a private server."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration.errors import (
    BackendError,
    BackendUnavailableError,
    map_backend_errors,
    translate_backend_error,
)

asyncpg = pytest.importorskip("asyncpg")


async def test_real_asyncpg_errors_are_classified(postgres_dsn: str) -> None:
    """A closed connection and a statement timeout are 'unavailable'; a constraint or
    syntax error is a plain BackendError; the original stays attached."""
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE t (k int PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(BackendError) as dup, map_backend_errors("postgres", "insert"):
            await conn.execute("INSERT INTO t VALUES (1)")
        assert type(dup.value) is BackendError
        assert isinstance(dup.value.__cause__, asyncpg.UniqueViolationError)
        with pytest.raises(BackendError) as bad, map_backend_errors("postgres", "typo"):
            await conn.execute("SELEC 1")
        assert type(bad.value) is BackendError
        await conn.execute("SET statement_timeout = 50")
        with pytest.raises(BackendUnavailableError), map_backend_errors("postgres", "slow"):
            await conn.execute("SELECT pg_sleep(5)")
    finally:
        await conn.close()
    with pytest.raises(BackendUnavailableError), map_backend_errors("postgres", "after close"):
        await conn.execute("SELECT 1")


def test_asyncio_timeouts_and_misuse() -> None:
    """asyncio.TimeoutError (asyncpg's timeouts) is unavailable; a driver misuse is an error."""
    mapped = translate_backend_error("postgres", asyncio.TimeoutError())
    assert isinstance(mapped, BackendUnavailableError)
    misuse = asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    assert type(translate_backend_error("postgres", misuse)) is BackendError
    assert translate_backend_error("postgres", KeyError("x")).__class__ is KeyError
