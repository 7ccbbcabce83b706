"""Fixtures for the queue tests: one factory per outbox store backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.queue import MemoryOutboxStore, OutboxStore, SQLiteOutboxStore

StoreFactory = Callable[..., OutboxStore]


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, StoreFactory]]:
    """(kind, factory): factory() makes a store object on one shared backing.

    Each call returns a *new* store object over the same data (a restarted
    process), except for memory, which has no data outside its object.
    """
    kind = request.param
    made: list[OutboxStore] = []
    if kind == "memory":
        shared = MemoryOutboxStore()

        def factory(**_: Any) -> OutboxStore:
            return shared

    elif kind == "sqlite":
        path = tmp_path / "outbox.db"

        def factory(**kw: Any) -> OutboxStore:
            store = SQLiteOutboxStore(path, **kw)
            made.append(store)
            return store

    elif kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        from fokha_integration.queue.postgres import PostgresOutboxConfig, PostgresOutboxStore

        def factory(**kw: Any) -> OutboxStore:
            # One consumer name: a new store object is this process restarted.
            config = PostgresOutboxConfig(consumer="suite", idle_wait=0)
            store = PostgresOutboxStore(dsn, config=config, **kw)
            made.append(store)
            return store

    else:
        url = request.getfixturevalue("redis_url")
        from fokha_integration.queue.redis import RedisStreamsStore

        def factory(**kw: Any) -> OutboxStore:
            store = RedisStreamsStore(url, **kw)
            made.append(store)
            return store

    yield kind, factory
    for store in made:
        await store.close()
