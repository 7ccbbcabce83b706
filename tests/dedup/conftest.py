"""Fixtures for the dedup tests: one parametrised backend environment over all three backends.

``env`` gives the same test a memory backend (ManualClock), an SQLite file in
``tmp_path`` (ManualClock for stored wall times) and the session's private
redis-server (a fresh namespace per test; expiry is the server's, so TTLs there
are real and short).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fokha_integration import ManualClock
from fokha_integration.dedup import (
    DedupBackend,
    DedupCache,
    MemoryDedupBackend,
    SQLiteDedupBackend,
)
from tests.support import timeout

_namespaces = itertools.count()


@dataclass
class Env:
    """One backend under test, with what a test needs to drive it."""

    kind: str
    clock: ManualClock
    make_backend: Callable[[], DedupBackend]
    opened: list[DedupBackend] = field(default_factory=list)

    def backend(self) -> DedupBackend:
        """A backend on this environment's storage (same file, same namespace)."""
        made = self.make_backend()
        self.opened.append(made)
        return made

    def cache(self, **kwargs: object) -> DedupCache:
        """A DedupCache over a backend of this environment."""
        return DedupCache(self.backend(), clock=self.clock, **kwargs)  # type: ignore[arg-type]

    async def expire(self, cache: DedupCache, key: str, *, type: str, seconds: float) -> None:
        """Let ``seconds`` pass for the entry of ``key`` so that it expires.

        Memory and SQLite measure time on the ManualClock: advance it. Redis expires
        keys on the server in real time: poll until the key is gone (bounded).
        """
        if self.kind != "redis":
            self.clock.advance(seconds + 0.001)
            return
        deadline = time.monotonic() + timeout(seconds + 5)
        while await cache.seen(key, type=type):
            assert time.monotonic() < deadline, f"{key!r} did not expire in time"
            await asyncio.sleep(0.02)  # polling the real server's expiry, bounded above


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """The same tests over memory, SQLite and Redis."""
    clock = ManualClock()
    kind = request.param
    if kind == "memory":
        shared = MemoryDedupBackend(clock=clock)
        environment = Env(kind, clock, lambda: shared)
    elif kind == "sqlite":
        path = tmp_path / "dedup.sqlite3"
        environment = Env(kind, clock, lambda: SQLiteDedupBackend(path, clock=clock))
    elif kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        from fokha_integration.dedup.postgres import PostgresDedupBackend

        environment = Env(kind, clock, lambda: PostgresDedupBackend(dsn, clock=clock))
    else:
        url = request.getfixturevalue("redis_url")
        from fokha_integration.dedup.redis import RedisDedupBackend

        namespace = f"test{next(_namespaces)}"
        environment = Env(
            kind, clock, lambda: RedisDedupBackend(url, namespace=namespace, clock=clock)
        )
    yield environment
    for backend in environment.opened:
        await backend.close()
