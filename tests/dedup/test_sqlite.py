"""SQLite backend specifics: real TTLs, WAL, the background sweep, a locked file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from fokha_integration import BackendUnavailableError, ClosedError, ConfigError, ManualClock
from fokha_integration.dedup import ClaimStatus, DedupCache, SQLiteDedupBackend, signal_key
from tests.support import timeout


def rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM fokha_dedup").fetchone()[0])


async def test_real_short_ttl(tmp_path: Path) -> None:
    """With the system clock a 0.3 s TTL really expires, and the key is FIRST again."""
    async with DedupCache(SQLiteDedupBackend(tmp_path / "d.db")) as cache:
        first = await cache.claim("k", ttl=0.3)
        assert first.status is ClaimStatus.FIRST
        assert (await cache.claim("k", ttl=0.3)).status is ClaimStatus.DUPLICATE
        deadline = time.monotonic() + timeout(5)
        while await cache.seen("k"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)  # waiting on real wall time passing, bounded
        assert time.time() >= first.first_seen + 0.3
        assert (await cache.claim("k", ttl=0.3)).status is ClaimStatus.FIRST


async def test_real_short_lease(tmp_path: Path) -> None:
    """With the system clock a 0.3 s lease really runs out and frees the key."""
    async with DedupCache(SQLiteDedupBackend(tmp_path / "d.db")) as cache:
        held = await cache.claim("job", lease=0.3)
        assert (await cache.claim("job")).status is ClaimStatus.IN_FLIGHT
        deadline = time.monotonic() + timeout(5)
        while (await cache.claim("job")).status is ClaimStatus.IN_FLIGHT:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)  # waiting on real wall time passing, bounded
        assert time.time() >= held.first_seen + 0.3


async def test_file_is_in_wal_mode_and_persists(tmp_path: Path) -> None:
    """The database uses WAL and its rows outlive the backend that wrote them."""
    path = tmp_path / "sub" / "d.db"
    async with DedupCache(SQLiteDedupBackend(path)) as cache:
        await cache.claim("k")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with DedupCache(SQLiteDedupBackend(path)) as cache:
        assert (await cache.claim("k")).status is ClaimStatus.DUPLICATE


async def test_background_sweep_deletes_expired_rows(tmp_path: Path) -> None:
    """The sweep task deletes expired rows (and only those) every sweep_interval."""
    clock = ManualClock()
    path = tmp_path / "d.db"
    backend = SQLiteDedupBackend(path, clock=clock, sweep_interval=10, sweep_batch=7)
    async with DedupCache(backend, clock=clock) as cache:
        await cache.claim_many([f"w{i}" for i in range(20)], type="webhook")
        await cache.claim("s", type="signal")
        assert rows(path) == 21
        await clock.wait_for_sleepers(1, timeout=timeout(5))
        clock.advance(31)  # webhook rows (30 s) expired; the sweep is due
        deadline = time.monotonic() + timeout(5)
        while rows(path) != 1:
            assert time.monotonic() < deadline, "the sweep did not run"
            await asyncio.sleep(0.01)  # polling the file another connection writes
        assert await cache.seen("s")


async def test_locked_database_fails_closed_or_open(tmp_path: Path) -> None:
    """A file locked by another writer past busy_timeout: closed raises, open degrades."""
    path = tmp_path / "d.db"
    async with DedupCache(SQLiteDedupBackend(path)) as cache:
        await cache.claim("warm")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        closed = DedupCache(SQLiteDedupBackend(path, busy_timeout=0.2))
        opened = DedupCache(SQLiteDedupBackend(path, busy_timeout=0.2), fail_mode="open")
        with pytest.raises(BackendUnavailableError):
            await closed.claim("k")
        answer = await opened.claim("k")
        assert answer.status is ClaimStatus.FIRST
        assert answer.degraded
        blocker.execute("ROLLBACK")
        assert (await closed.claim("k")).status is ClaimStatus.FIRST  # works again
        assert (await opened.claim("k")).status is ClaimStatus.DUPLICATE
        await closed.close()
        await opened.close()
    finally:
        blocker.close()


async def test_closed_backend_refuses(tmp_path: Path) -> None:
    """After close the backend raises ClosedError."""
    backend = SQLiteDedupBackend(tmp_path / "d.db")
    cache = DedupCache(backend)
    await cache.claim("k")
    await cache.close()
    await cache.close()  # idempotent
    with pytest.raises(ClosedError):
        await cache.claim("k")


async def test_event_loop_is_not_blocked_by_a_lock(tmp_path: Path) -> None:
    """While a claim waits for a locked file, other coroutines keep running."""
    path = tmp_path / "d.db"
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        async with DedupCache(SQLiteDedupBackend(path, busy_timeout=5)) as cache:
            await cache.claim("warm")
            blocker.execute("BEGIN EXCLUSIVE")
            pending = asyncio.ensure_future(cache.claim("k"))
            ticks = 0
            while ticks < 5:  # the loop turns while the claim waits on the lock
                await asyncio.sleep(0)
                ticks += 1
            assert not pending.done()
            blocker.execute("ROLLBACK")
            assert (await pending).status is ClaimStatus.FIRST
    finally:
        blocker.close()


def test_bad_configuration(tmp_path: Path) -> None:
    """Bad settings are refused at construction."""
    with pytest.raises(ConfigError):
        SQLiteDedupBackend(tmp_path / "d.db", synchronous="SOMETIMES")
    with pytest.raises(ConfigError):
        SQLiteDedupBackend(tmp_path / "d.db", busy_timeout=0)
    with pytest.raises(ConfigError):
        SQLiteDedupBackend(tmp_path / "d.db", sweep_interval=-1)


async def test_real_sliding_and_tumbling_windows(tmp_path: Path) -> None:
    """Real time on SQLite: a sliding window of 0.3 s holds, then frees; tumbling keys split."""
    async with DedupCache(SQLiteDedupBackend(tmp_path / "d.db")) as cache:
        key = signal_key("EURUSD", "BUY", time.time(), 1, mode="sliding")
        first = await cache.claim(key, ttl=0.3)
        assert first.status is ClaimStatus.FIRST
        assert (await cache.claim(key, ttl=0.3)).status is ClaimStatus.DUPLICATE
        deadline = time.monotonic() + timeout(5)
        while (await cache.claim(key, ttl=0.3)).status is ClaimStatus.DUPLICATE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)  # waiting on real wall time passing, bounded
        assert time.time() >= first.first_seen + 0.3
        boundary = float(int(time.time()))
        before = signal_key("EURUSD", "BUY", boundary - 0.001, 1)
        after = signal_key("EURUSD", "BUY", boundary, 1)
        assert (await cache.claim(before)).status is ClaimStatus.FIRST
        assert (await cache.claim(after)).status is ClaimStatus.FIRST
