"""Shared fixtures (see ``tests/support.py`` for the helpers they use).

The ``redis_server`` fixture starts a private ``redis-server`` on a free port for the
session (never the machine's shared one); without the binary, Redis tests skip with
a reason locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RedisServer, free_port


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, for the whole test session."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed; .ci/run should have installed it")
        pytest.skip("redis-server binary not found on PATH")
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
