"""Dedup: the atomic "seen or claim" that keeps one signal from becoming two trades.

:class:`DedupCache` answers each claim FIRST (act), DUPLICATE, CONFLICT or IN_FLIGHT
(do not act), with a TTL per message type, two-phase leases and a fail mode for an
unreachable backend. Backends: :class:`MemoryDedupBackend` (default, one process),
:class:`SQLiteDedupBackend` (processes on one host, survives restarts) and
``RedisDedupBackend`` (many hosts; needs the ``redis`` extra). The Redis backend is
imported lazily: ``from fokha_integration.dedup.redis import RedisDedupBackend`` or
``fokha_integration.dedup.RedisDedupBackend`` (resolved on first access), so
importing this package never imports redis-py.

See ``docs/dedup.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backend import (
    ClaimResult,
    ClaimStatus,
    DedupBackend,
    DedupStats,
    SyncDedupBackend,
)
from ._cache import DEFAULT_TTLS, DedupCache, FailMode
from ._keys import WindowMode, content_key, signal_key
from .memory import MemoryDedupBackend
from .sqlite import SQLiteDedupBackend

if TYPE_CHECKING:
    from .redis import RedisDedupBackend

__all__ = [
    "DEFAULT_TTLS",
    "ClaimResult",
    "ClaimStatus",
    "DedupBackend",
    "DedupCache",
    "DedupStats",
    "FailMode",
    "MemoryDedupBackend",
    "RedisDedupBackend",
    "SQLiteDedupBackend",
    "SyncDedupBackend",
    "WindowMode",
    "content_key",
    "signal_key",
]


def __getattr__(name: str) -> Any:
    if name == "RedisDedupBackend":
        from .redis import RedisDedupBackend

        return RedisDedupBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
