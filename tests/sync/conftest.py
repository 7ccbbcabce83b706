"""Fixtures for the sync tests: one server store per backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.sync import MemorySyncStore, SyncStore


class Wall:
    """A settable wall clock (seconds) for services and clients."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> SyncStore:
    """A fresh store of ``kind``."""
    if kind == "memory":
        return MemorySyncStore()
    if kind == "sqlite":
        from fokha_integration.sync.sqlite import SQLiteSyncStore

        return SQLiteSyncStore(tmp_path / "server.db")
    pytest.importorskip("asyncpg")
    from fokha_integration.sync.postgres import PostgresSyncStore

    return PostgresSyncStore(request.getfixturevalue("postgres_dsn"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each server store backend."""
    return str(request.param)


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A fresh, unopened server store of each backend (closed after the test)."""
    s = make_store(store_kind, tmp_path, request)
    yield s
    await s.close()


@pytest.fixture
def wall() -> Wall:
    """A settable wall clock."""
    return Wall()
