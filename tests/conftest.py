"""Shared fixtures (see ``tests/support.py`` for the helpers they use).

The ``redis_server`` fixture starts a private ``redis-server`` on a free port for the
session (never the machine's shared one), and ``postgres_server`` a private
PostgreSQL cluster in a temp dir; without the binaries, those tests skip with a
reason locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PostgresServer, RedisServer, free_port, postgres_bin_dir, require_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, for the whole test session."""
    require_redis(client=False)
    with tempfile.TemporaryDirectory(prefix="fokha-redis-") as workdir:
        server = RedisServer(port=free_port(), workdir=Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the private redis-server, flushed before each test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on a free port, for the whole test session."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed; .ci/run should have installed it")
        pytest.skip("PostgreSQL server binaries (initdb) not found")
    with tempfile.TemporaryDirectory(prefix="fokha-pg-") as workdir:
        server = PostgresServer(port=free_port(), workdir=Path(workdir), bin_dir=bin_dir)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the private PostgreSQL server."""
    if postgres_server.proc is None or postgres_server.proc.poll() is not None:
        postgres_server.start()
    return postgres_server.create_database()


@pytest.fixture(autouse=True)
def ws_frames_validated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every frame our WebSocket server/client sends is checked against the JSON Schemas
    (tests/wire_schemas.py); a frame that does not fit fails the test."""
    try:
        from tests.wire_schemas import validating_frames
    except ImportError as exc:  # jsonschema missing (the dev extra)
        if os.environ.get("CI") == "true":
            pytest.fail(f"jsonschema is needed to validate WebSocket frames: {exc}")
        yield
        return
    with validating_frames(monkeypatch):
        yield


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many WebSocket frames were validated against the schemas in this run."""
    import sys

    wire = sys.modules.get("tests.wire_schemas")
    checked = getattr(wire, "_checker", None)
    if checked is not None:
        counts = checked.counts
        terminalreporter.write_line(
            f"WebSocket frames validated against the schemas: {counts['server']} sent by the "
            f"server, {counts['client']} sent by the client"
        )
