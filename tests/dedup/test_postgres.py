"""The PostgreSQL dedup backend beyond the shared suite: processes, SIGKILL, sweeping, errors."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import ManualClock
from fokha_integration.dedup import ClaimStatus, DedupCache
from fokha_integration.errors import BackendUnavailableError, ConfigError
from tests.dedup.test_processes import kill_holder_then_check, run_concurrent_claims
from tests.support import free_port, timeout

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


# -- the two-statement paths: the fast statement cannot answer, the take-over does ----


async def _wait_for_blocked(dsn: str, count: int) -> None:
    """Wait (bounded) until ``count`` sessions wait on a lock.

    From a connection of its own outside any transaction: pg_stat_activity is read
    once per transaction.
    """
    import time

    import asyncpg

    deadline = time.monotonic() + timeout(15)
    watcher = await asyncpg.connect(dsn)
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while await watcher.fetchval(sql) < count:
            assert time.monotonic() < deadline, f"{count} claims did not queue on the lock"
            await asyncio.sleep(0.02)  # polling the server's view of waiting sessions, bounded
    finally:
        await watcher.close()


async def test_expired_entry_is_taken_over_with_the_new_claims_values(postgres_dsn: str) -> None:
    """An expired, leased, fingerprinted, committed entry is replaced whole by the next claim."""
    clock = ManualClock()
    backend = PostgresDedupBackend(postgres_dsn, clock=clock, sweep_interval=None)
    async with DedupCache(backend, clock=clock, ttl_by_type={"signal": 10}) as cache:
        old = await cache.claim("k", fingerprint="a", lease=5)
        assert await cache.commit("k", b"old result", token=old.token)
        clock.advance(11)
        new = await cache.claim("k", fingerprint="b", lease=3)
        assert new.status is ClaimStatus.FIRST
        assert new.token not in (None, old.token)
        assert new.first_seen == pytest.approx(clock.time())
        assert new.expires_at == pytest.approx(clock.time() + 3)
        again = await cache.claim("k", fingerprint="b")
        assert again.status is ClaimStatus.IN_FLIGHT  # the new lease, not the old DONE row
        assert again.result is None  # the old result went with the old entry
        assert (await cache.claim("k", fingerprint="c")).status is ClaimStatus.CONFLICT
        # The batch path: one new, one live, one expired key in one call.
        await cache.claim_many(["old"])
        clock.advance(4)
        await cache.claim_many(["live"])
        clock.advance(7)  # "old" (claimed 11 s ago) expired; "live" (7 s ago) did not
        answers = await cache.claim_many(["new", "live", "old", "new"])
        assert [a.status for a in answers] == [
            ClaimStatus.FIRST,
            ClaimStatus.DUPLICATE,
            ClaimStatus.FIRST,
            ClaimStatus.DUPLICATE,
        ]
        assert answers[2].expires_at == pytest.approx(clock.time() + 10)


@pytest.mark.parametrize("batch", [False, True], ids=["claim", "claim_many"])
async def test_concurrent_claims_of_an_expired_key_give_one_first(
    postgres_dsn: str, batch: bool
) -> None:
    """Claims queued on an expired row all fall through to the take-over: one FIRST."""
    import asyncpg

    clock = ManualClock()
    claimers = 6
    backend = PostgresDedupBackend(postgres_dsn, clock=clock, sweep_interval=None)
    async with DedupCache(backend, clock=clock, ttl_by_type={"signal": 10}) as cache:
        await cache.claim("k")
        clock.advance(11)
        holder = await asyncpg.connect(postgres_dsn)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM fokha_dedup WHERE key = 'k' FOR UPDATE")
            if batch:
                calls = [cache.claim_many(["a", "k", "z"]) for _ in range(claimers)]
            else:
                calls = [cache.claim("k") for _ in range(claimers)]
            pending = asyncio.gather(*calls)
            await _wait_for_blocked(postgres_dsn, claimers)
            await tx.commit()
            results = await asyncio.wait_for(pending, timeout(15))
        finally:
            await holder.close()
    answers = [r[1] for r in results] if batch else list(results)
    assert [a.status for a in answers].count(ClaimStatus.FIRST) == 1
    assert all(a.key == "k" for a in answers)


@pytest.mark.parametrize("batch", [False, True], ids=["claim", "claim_many"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_claim_racing_an_uncommitted_insert(
    postgres_dsn: str, batch: bool, outcome: str
) -> None:
    """A claim that meets another session's uncommitted entry waits for it: DUPLICATE when
    it commits (after the claim's statement began: the batch's snapshot misses it), FIRST
    when it rolls back."""
    import asyncpg

    async with DedupCache(PostgresDedupBackend(postgres_dsn, sweep_interval=None)) as cache:
        await cache.seen("warm-up")  # the table exists
        other = await asyncpg.connect(postgres_dsn)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute(
                "INSERT INTO fokha_dedup (type, key, first_seen, expires_at, state, token)"
                " VALUES ('signal', 'k', 0, 1e12, 0, 'other')"
            )
            pending = asyncio.ensure_future(
                cache.claim_many(["a", "k", "z"]) if batch else cache.claim("k")
            )
            await _wait_for_blocked(postgres_dsn, 1)
            await (tx.commit() if outcome == "commit" else tx.rollback())
            result = await asyncio.wait_for(pending, timeout(15))
        finally:
            await other.close()
    answer = result[1] if batch else result
    wanted = ClaimStatus.DUPLICATE if outcome == "commit" else ClaimStatus.FIRST
    assert answer.status is wanted
    if batch:
        assert [r.status for r in result[::2]] == [ClaimStatus.FIRST, ClaimStatus.FIRST]


@pytest.mark.parametrize("batch", [False, True], ids=["claim", "claim_many"])
async def test_claim_racing_a_concurrent_forget_is_first(postgres_dsn: str, batch: bool) -> None:
    """A live entry deleted by another session while the claim waits: the claim inserts
    anew and is FIRST (the batch's snapshot still saw the old row: the insert wins)."""
    import asyncpg

    async with DedupCache(PostgresDedupBackend(postgres_dsn, sweep_interval=None)) as cache:
        assert (await cache.claim("k")).status is ClaimStatus.FIRST
        other = await asyncpg.connect(postgres_dsn)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute("DELETE FROM fokha_dedup WHERE key = 'k'")
            pending = asyncio.ensure_future(
                cache.claim_many(["a", "k", "z"]) if batch else cache.claim("k")
            )
            await _wait_for_blocked(postgres_dsn, 1)
            await tx.commit()
            result = await asyncio.wait_for(pending, timeout(15))
        finally:
            await other.close()
        answer = result[1] if batch else result
        assert answer.status is ClaimStatus.FIRST
        assert (await cache.claim("k")).status is ClaimStatus.DUPLICATE


async def test_a_claim_survives_a_schema_change_under_its_prepared_statement(
    postgres_dsn: str,
) -> None:
    """The claim runs a statement prepared on its connection; when the table changes
    under it (here a returned column's type), the claim runs it again instead of failing."""
    import asyncpg

    async with DedupCache(PostgresDedupBackend(postgres_dsn, sweep_interval=None)) as cache:
        assert (await cache.claim("a")).status is ClaimStatus.FIRST
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute("ALTER TABLE fokha_dedup ALTER COLUMN state TYPE integer")
        finally:
            await conn.close()
        assert (await cache.claim("a")).status is ClaimStatus.DUPLICATE
        assert (await cache.claim("b")).status is ClaimStatus.FIRST
        assert (await cache.claim("b", lease=5)).status is ClaimStatus.DUPLICATE
