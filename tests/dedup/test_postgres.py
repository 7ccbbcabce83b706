"""The PostgreSQL dedup backend beyond the shared suite: processes, SIGKILL, sweeping, errors."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import ManualClock
from fokha_integration.dedup import ClaimStatus, DedupCache
from fokha_integration.errors import BackendUnavailableError, ConfigError
from tests.dedup.test_processes import kill_holder_then_check, run_concurrent_claims
from tests.support import free_port

pytest.importorskip("asyncpg")

from fokha_integration.dedup.postgres import PostgresDedupBackend


@pytest.mark.slow
def test_four_processes_claim_each_key_once(postgres_dsn: str) -> None:
    """4 processes (2 single claims, 2 batches) claiming the same 10,000 keys: each FIRST once."""
    run_concurrent_claims("postgres", postgres_dsn, "-")


def test_claims_survive_sigkill(postgres_dsn: str) -> None:
    """A process claims and commits, is SIGKILLed; a new process sees DUPLICATE and the result."""
    kill_holder_then_check("postgres", postgres_dsn, "-", PostgresDedupBackend(postgres_dsn))


async def test_sweep_deletes_only_expired_rows_and_skips_locked_ones(postgres_dsn: str) -> None:
    """The sweep deletes expired rows in batches, never waits on a row a claim holds."""
    import asyncpg

    clock = ManualClock()
    backend = PostgresDedupBackend(postgres_dsn, clock=clock, sweep_batch=7, sweep_interval=None)
    cache = DedupCache(backend, clock=clock, ttl_by_type={"signal": 10})
    try:
        await cache.claim_many([f"old{i}" for i in range(30)])
        clock.advance(11)
        await cache.claim_many([f"new{i}" for i in range(5)])
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with conn.transaction():
                # Another session holds one expired row locked (as a claim in progress would).
                await conn.execute("SELECT 1 FROM fokha_dedup WHERE key = 'old0' FOR UPDATE")
                swept = await asyncio.wait_for(backend.sweep(), 10)
            assert swept == 29
            assert await backend.sweep() == 1  # once released, it goes too
        finally:
            await conn.close()
        assert all([await cache.seen(f"new{i}") for i in range(5)])
        assert (await cache.claim("old3")).status is ClaimStatus.FIRST
    finally:
        await cache.close()


async def test_server_clock_by_default(postgres_dsn: str) -> None:
    """Without a clock the server's time is used: first_seen is close to now."""
    import time

    async with DedupCache(PostgresDedupBackend(postgres_dsn)) as cache:
        first = await cache.claim("k", ttl=60)
        assert abs(first.first_seen - time.time()) < 5
        assert first.expires_at == pytest.approx(first.first_seen + 60, abs=1e-3)


async def test_unreachable_server_is_backend_unavailable() -> None:
    """A server that is not there raises BackendUnavailableError (fail-closed by default)."""
    from fokha_integration._postgres import PostgresPool

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    backend = PostgresDedupBackend(dsn, limits=PostgresPool(connect_timeout=2))
    with pytest.raises(BackendUnavailableError):
        await DedupCache(backend).claim("k")


def test_settings_are_checked() -> None:
    """Bad settings raise ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="prefix"):
        PostgresDedupBackend("postgresql://x/y", prefix="bad-prefix")
    with pytest.raises(ConfigError, match="sweep_interval"):
        PostgresDedupBackend("postgresql://x/y", sweep_interval=float("nan"))
    with pytest.raises(ConfigError, match="dsn"):
        PostgresDedupBackend("")
