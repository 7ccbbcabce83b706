"""The server store protocol every backend implements, and the pieces they share."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..errors import BackendError
from ._core import Cursor, PushPlan
from ._types import ConflictEntry, Record, StoreStatus

__all__ = [
    "Planner",
    "RawChange",
    "RawPage",
    "SyncStore",
    "acked_seq",
    "decode_record",
    "dumps",
    "new_epoch",
]

Planner = Callable[[int, Mapping[tuple[str, str], Record]], PushPlan]
"""``planner(last_mutation_id, current_records) -> PushPlan``; run inside the write transaction."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """The one JSON encoding stored and sent (compact, UTF-8, no NaN)."""
    return _ENCODER.encode(value)


def new_epoch() -> str:
    """A random store identity (part of every cursor; a new store means a reset)."""
    return secrets.token_hex(6)


class RawChange(NamedTuple):
    """A change as stored: ``data_json`` is the stored JSON text (``None`` for a tombstone).

    A named tuple, so a store page of rows becomes changes without a Python ``__init__``
    per row (the initial sync of 100,000 records makes 100,000 of them).
    """

    seq: int
    collection: str
    id: str
    data_json: str | None
    version: str
    deleted: bool


def decode_record(c: RawChange) -> Record:
    """The :class:`Record` of a raw change."""
    data = None if c.data_json is None else json.loads(c.data_json)
    return Record(c.collection, c.id, data, c.version, bool(c.deleted))


@dataclass(frozen=True, slots=True)
class RawPage:
    """One pull page read in one transaction (with the client's ack written in it)."""

    changes: list[RawChange]
    cursor: Cursor
    has_more: bool
    last_mutation_id: int
    reset: bool
    request: Cursor
    """The cursor the page was read after (a new client's is the snapshot start)."""

    def truncated(self, budget: int) -> RawPage:
        """This page cut to the changes whose data fits ``budget`` bytes (at least one)."""
        used = 0
        for i, c in enumerate(self.changes):
            used += len(c.data_json or "") + len(c.id) + 64
            if used > budget and i > 0:
                rows = self.changes[:i]
                cursor = Cursor(self.cursor.epoch, rows[-1].seq, self.request.snapshot)
                return RawPage(rows, cursor, True, self.last_mutation_id, self.reset, self.request)
        return self


class SyncStore(Protocol):
    """What :class:`~fokha_integration.sync.SyncService` needs of a server store.

    Every write method is one transaction: the data and the state that covers it
    (``last_mutation_id``, the sequence counter, the clock, a client's cursor) are
    committed together or not at all.
    """

    async def open(self) -> None:
        """Create the schema if needed and load the store's identity."""

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def load_clock(self) -> str | None:
        """The last persisted HLC value, or ``None`` for a new store."""

    async def push(
        self, client_id: str, keys: Sequence[tuple[str, str]], planner: Planner
    ) -> PushPlan:
        """Lock the client's row, read ``keys``, run ``planner``, write its plan, commit."""

    async def pull(
        self,
        client_id: str,
        collections: Sequence[str],
        cursor: Cursor | None,
        limit: int,
        now_ms: int,
        ack: Cursor | None = None,
    ) -> RawPage:
        """Changes after ``cursor`` (or a reset), recording ``ack`` (default ``cursor``) as
        the client's acknowledged position."""

    async def write(
        self, records: Sequence[Record], clock: str, resolved: int | None = None
    ) -> None:
        """Server-side writes (a conflict resolution), optionally marking a conflict resolved."""

    async def get(self, collection: str, id: str) -> Record | None:
        """One record (tombstones included)."""

    async def compact(self, active_since_ms: int) -> int:
        """Drop tombstones every client seen since ``active_since_ms`` has acknowledged."""

    async def conflicts(
        self, *, collection: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[ConflictEntry]:
        """Logged conflicts, oldest first."""

    async def get_conflict(self, conflict_id: int) -> ConflictEntry | None:
        """One logged conflict."""

    async def status(self) -> StoreStatus:
        """Counts and clients."""


def record_json(r: Record | None) -> str | None:
    """A record as JSON text for the conflict log."""
    return None if r is None else dumps(r.to_wire())


def record_from_json(text: str | None) -> Record | None:
    """The inverse of :func:`record_json`."""
    if text is None:
        return None
    d = json.loads(text)
    return Record(d["collection"], d["id"], d["data"], d["version"], d["deleted"])


def conflict_from_row(row: Sequence[Any]) -> ConflictEntry:
    """A conflict-log row (id, collection, id, policy, server, client, result, client_id,
    created_ms, resolved), as every SQL store selects it, as a :class:`ConflictEntry`."""
    client = record_from_json(row[5])
    result = record_from_json(row[6])
    if client is None or result is None:
        raise BackendError("sync", f"conflict {row[0]} has no client or result version")
    return ConflictEntry(
        row[0],
        row[1],
        row[2],
        row[3],
        record_from_json(row[4]),
        client,
        result,
        row[7],
        row[8],
        bool(row[9]),
    )


def page_cursor(
    epoch: str,
    request: Cursor | None,
    reset: bool,
    rows: Sequence[RawChange],
    has_more: bool,
    high_seq: int,
    generation: int,
) -> Cursor:
    """The cursor a page hands back (snapshot mode continues until the snapshot is complete)."""
    if reset:
        return Cursor(epoch, 0, generation)
    snapshot = None
    if request is not None and request.snapshot is not None and has_more:
        snapshot = request.snapshot
    seq = rows[-1].seq if has_more else max(high_seq, request.seq if request else 0)
    return Cursor(epoch, seq, snapshot)


def acked_seq(request: Cursor, ack: Cursor | None, reset: bool) -> int:
    """What a pull acknowledges: ``ack`` when the client sent one (a client that asks for
    the next page before storing this one acknowledges only what it stored), else the
    request cursor; never beyond the request, nothing on a reset or a foreign cursor."""
    if reset:
        return 0
    if ack is None:
        return request.seq
    if ack.epoch != request.epoch:
        return 0
    return min(ack.seq, request.seq)
