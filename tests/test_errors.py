"""map_backend_errors translates each driver's errors through one table per driver."""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import pytest

from fokha_integration.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    map_backend_errors,
    translate_backend_error,
)


def test_sqlite_locked_is_unavailable_and_syntax_is_error() -> None:
    """A locked database is 'unavailable'; a malformed statement is a plain BackendError."""
    with pytest.raises(BackendUnavailableError) as info, map_backend_errors("sqlite", "claim"):
        raise sqlite3.OperationalError("database is locked")
    assert info.value.backend == "sqlite"
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(BackendError) as err, map_backend_errors("sqlite"):
        raise sqlite3.OperationalError('near "SELEC": syntax error')
    assert not isinstance(err.value, BackendUnavailableError)


def test_os_errors_by_errno() -> None:
    """A full disk is 'unavailable'; a permission error is a BackendError."""
    full = translate_backend_error("os", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, BackendUnavailableError)
    denied = translate_backend_error("os", PermissionError(errno.EACCES, "denied"))
    assert type(denied) is BackendError


def test_library_errors_and_unknown_exceptions_pass_through() -> None:
    """Our own errors, CancelledError and non-driver exceptions are not translated."""
    with pytest.raises(ConfigError), map_backend_errors("sqlite"):
        raise ConfigError("x", "bad")
    with pytest.raises(asyncio.CancelledError), map_backend_errors("redis"):
        raise asyncio.CancelledError
    with pytest.raises(KeyError), map_backend_errors("sqlite"):
        raise KeyError("bug")


def test_redis_table() -> None:
    """redis-py: connection/timeout/loading are 'unavailable', a ResponseError is an error."""
    redis_exceptions = pytest.importorskip("redis.exceptions")
    assert isinstance(
        translate_backend_error("redis", redis_exceptions.BusyLoadingError("loading")),
        BackendUnavailableError,
    )
    err = translate_backend_error("redis", redis_exceptions.ResponseError("ERR unknown command"))
    assert type(err) is BackendError


def test_redis_out_of_memory_is_unavailable() -> None:
    """redis-py's OutOfMemoryError (maxmemory reached, noeviction) is 'unavailable', like a
    full disk on SQLite: it passes once memory is freed, and fail-open/closed applies."""
    redis_exceptions = pytest.importorskip("redis.exceptions")
    oom = redis_exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    assert isinstance(translate_backend_error("redis", oom), BackendUnavailableError)


def test_postgres_sqlstate_classes() -> None:
    """SQLSTATE class 08 (connection) is 'unavailable', 23505 (unique violation) an error."""

    class FakeDriverError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    assert isinstance(
        translate_backend_error("postgres", FakeDriverError("08006")), BackendUnavailableError
    )
    assert type(translate_backend_error("postgres", FakeDriverError("23505"))) is BackendError
