"""One classification table per driver: which of its exceptions mean "unavailable".

Used only through :func:`fokha_integration.errors.map_backend_errors` and
:func:`~fokha_integration.errors.translate_backend_error`. A table answers, for
one exception of its driver:

- ``"unavailable"``: the backend cannot serve right now (connection refused or
  lost, timed out, locked, still loading, disk full); a later retry may succeed,
  and fail-open/fail-closed choices apply;
- ``"error"``: the driver reached the backend and the request itself failed
  (a malformed command, a constraint, a corrupt file); retrying will not help;
- ``None``: not this driver's exception; it passes through untranslated.

Driver packages are imported only inside their table, and only when an exception
is being classified, so a missing optional driver costs nothing.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable
from typing import Literal

Kind = Literal["unavailable", "error"]

__all__ = ["Kind", "classify"]

# OS errors that say "not now" rather than "never": the disk is full, the device
# is busy, the peer is gone, the operation timed out.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)

# sqlite3 reports most faults as OperationalError with a message; these
# fragments mean the file is there but cannot be used right now.
_SQLITE_UNAVAILABLE = (
    "locked",
    "busy",
    "unable to open",
    "disk i/o",
    "database or disk is full",
    "readonly",
    "read-only",
)


def _classify_os(exc: BaseException) -> Kind | None:
    if isinstance(exc, TimeoutError):
        return "unavailable"
    if isinstance(exc, OSError):
        return "unavailable" if exc.errno in _TRANSIENT_ERRNOS else "error"
    return None


def _classify_sqlite(exc: BaseException) -> Kind | None:
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "unavailable" if any(f in text for f in _SQLITE_UNAVAILABLE) else "error"
    if isinstance(exc, sqlite3.Error):
        return "error"
    return _classify_os(exc)


def _classify_redis(exc: BaseException) -> Kind | None:
    try:
        from redis import exceptions as r
    except ImportError:  # pragma: no cover - the redis extra is not installed
        return _classify_os(exc)
    unavailable = (
        r.ConnectionError,
        r.TimeoutError,
        r.BusyLoadingError,
        r.ClusterDownError,
        r.TryAgainError,
        r.MasterDownError,
        # OOM: maxmemory reached under noeviction, Redis's "disk full": writes are
        # refused until memory is freed, then the same command succeeds.
        r.OutOfMemoryError,
    )
    if isinstance(exc, unavailable):
        return "unavailable"
    if isinstance(exc, r.RedisError):
        return "error"
    return _classify_os(exc)


# SQLSTATEs that mean "not now": class 08 (connection exception), 53 (insufficient
# resources: too many connections, disk full, out of memory), 57P (operator
# intervention: shutdown, crash recovery, cannot connect now), 40001/40P01
# (serialization failure, deadlock: retry the transaction), 57014 (statement
# timeout or cancel) and 55P03 (lock_timeout).
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57P")
_PG_UNAVAILABLE_STATES = frozenset({"40001", "40P01", "57014", "55P03"})


def _classify_postgres(exc: BaseException) -> Kind | None:
    # The driver is asyncpg (chosen by benchmarks/bench_postgres_drivers.py); a
    # psycopg error carries its SQLSTATE too (``sqlstate``) and is classed the same.
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and len(state) == 5:
        if state.startswith(_PG_UNAVAILABLE_CLASSES) or state in _PG_UNAVAILABLE_STATES:
            return "unavailable"
        return "error"
    if isinstance(exc, asyncio.TimeoutError):  # asyncpg's timeouts (not TimeoutError on 3.10)
        return "unavailable"
    try:
        from asyncpg import exceptions as pg
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        return _classify_os(exc)
    if isinstance(exc, pg.InterfaceError):
        # "connection is closed", "pool is closing": the link is gone; anything else
        # ("another operation is in progress", a bad argument) is a misuse.
        text = str(exc).lower()
        return "unavailable" if "closed" in text or "closing" in text else "error"
    if isinstance(exc, (pg.PostgresError, pg.InternalClientError)):
        return "error"
    return _classify_os(exc)


_TABLES: dict[str, Callable[[BaseException], Kind | None]] = {
    "os": _classify_os,
    "sqlite": _classify_sqlite,
    "redis": _classify_redis,
    "postgres": _classify_postgres,
}


def classify(backend: str, exc: BaseException) -> Kind | None:
    """What ``exc`` means for ``backend`` (a key of the tables above); see the module docstring."""
    table = _TABLES.get(backend, _classify_os)
    return table(exc)
