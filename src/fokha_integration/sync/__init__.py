"""Two-way record sync between a Python server and its clients (protocol v1).

Records ``{collection, id, data, version, deleted}`` are versioned by hybrid
logical clocks; clients pull changes after an opaque cursor and push mutations
with per-client increasing ids that the server applies exactly once. See
docs/sync.md for the guide and docs/protocols/sync.md for the wire contract.

Stores: :class:`MemorySyncStore` (here), ``SQLiteSyncStore``
(``fokha_integration.sync.sqlite``) and ``PostgresSyncStore``
(``fokha_integration.sync.postgres``, the ``postgres`` extra). The HTTP
sub-application is :func:`sync_app` and the client :class:`SyncClient`; both load
aiohttp only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import Cursor, Limits, MutationGapError
from ._hlc import ClockSkewError, HybridClock, Timestamp, parse_version
from ._service import SyncConfig, SyncMetrics, SyncService, SyncStats
from ._store import SyncStore
from ._types import (
    ClientInfo,
    Collection,
    ConflictEntry,
    Mutation,
    MutationResult,
    Record,
    StoreStatus,
)
from .memory import MemorySyncStore

if TYPE_CHECKING:
    from ._app import POKE_CHANNEL, sync_app
    from ._client import SyncClient, SyncClientConfig, SyncClientStats
    from ._health import sync_check
    from .sqlite import SQLiteSyncStore

__all__ = [
    "POKE_CHANNEL",
    "ClientInfo",
    "ClockSkewError",
    "Collection",
    "ConflictEntry",
    "Cursor",
    "HybridClock",
    "Limits",
    "MemorySyncStore",
    "Mutation",
    "MutationGapError",
    "MutationResult",
    "Record",
    "SQLiteSyncStore",
    "StoreStatus",
    "SyncClient",
    "SyncClientConfig",
    "SyncClientStats",
    "SyncConfig",
    "SyncMetrics",
    "SyncService",
    "SyncStats",
    "SyncStore",
    "Timestamp",
    "parse_version",
    "sync_app",
    "sync_check",
]

_LAZY = {
    "POKE_CHANNEL": "._app",
    "sync_app": "._app",
    "SyncClient": "._client",
    "SyncClientStats": "._client",
    "SyncClientConfig": "._client",
    "sync_check": "._health",
    "SQLiteSyncStore": ".sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
