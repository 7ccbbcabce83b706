"""The in-memory sync store: for tests and single-process demos (nothing survives a restart)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from ._core import Cursor, PushPlan
from ._store import Planner, RawChange, RawPage, acked_seq, dumps, new_epoch, page_cursor
from ._types import ClientInfo, ConflictEntry, Record, StoreStatus

__all__ = ["MemorySyncStore"]


class MemorySyncStore:
    """A :class:`~fokha_integration.sync.SyncStore` in dicts; an asyncio lock is the transaction."""

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self._lock = asyncio.Lock()
        self._records: dict[tuple[str, str], tuple[int, Record]] = {}
        self._by_seq: dict[int, tuple[str, str]] = {}  # insertion order == seq order
        self._seq = 0
        self._floor = 0
        self._generation = 0
        self._clock: str | None = None
        self._clients: dict[str, ClientInfo] = {}
        self._conflicts: list[ConflictEntry] = []

    async def open(self) -> None:
        """Nothing to create."""

    async def close(self) -> None:
        """Nothing to release."""

    async def load_clock(self) -> str | None:
        """The last clock value written."""
        return self._clock

    def _client(self, client_id: str) -> ClientInfo:
        return self._clients.get(client_id) or ClientInfo(client_id, 0, 0, 0)

    def _put(self, record: Record) -> None:
        key = (record.collection, record.id)
        old = self._records.get(key)
        if old is not None:
            del self._by_seq[old[0]]
        self._seq += 1
        self._records[key] = (self._seq, record)
        self._by_seq[self._seq] = key

    async def push(
        self, client_id: str, keys: Sequence[tuple[str, str]], planner: Planner
    ) -> PushPlan:
        """Run the plan on a copy-free view; nothing is written if the planner raises."""
        async with self._lock:
            info = self._client(client_id)
            current = {k: self._records[k][1] for k in keys if k in self._records}
            plan = planner(info.last_mutation_id, current)
            for r in plan.writes:
                self._put(r)
            for c in plan.conflicts:
                self._conflicts.append(replace(c, conflict_id=len(self._conflicts) + 1))
            self._clients[client_id] = replace(info, last_mutation_id=plan.last_mutation_id)
            self._clock = plan.clock
            return plan

    async def pull(
        self,
        client_id: str,
        collections: Sequence[str],
        cursor: Cursor | None,
        limit: int,
        now_ms: int,
        ack: Cursor | None = None,
    ) -> RawPage:
        """Changes after the cursor, in seq order."""
        async with self._lock:
            request = cursor or Cursor(self.epoch, 0, self._generation)
            reset = request.needs_reset(self.epoch, self._floor, self._generation)
            info = self._client(client_id)
            wanted = set(collections)
            rows: list[RawChange] = []
            has_more = reset  # a reset page is followed by the snapshot
            if not reset:
                for seq, key in self._by_seq.items():
                    if seq <= request.seq or key[0] not in wanted:
                        continue
                    if len(rows) == limit:
                        has_more = True
                        break
                    r = self._records[key][1]
                    data = None if r.data is None else dumps(r.data)
                    rows.append(RawChange(seq, r.collection, r.id, data, r.version, r.deleted))
            acked = acked_seq(request, ack, reset)
            self._clients[client_id] = replace(info, ack_seq=acked, last_seen_ms=now_ms)
            new = page_cursor(
                self.epoch, request, reset, rows, has_more, self._seq, self._generation
            )
            return RawPage(rows, new, has_more, info.last_mutation_id, reset, request)

    async def write(
        self, records: Sequence[Record], clock: str, resolved: int | None = None
    ) -> None:
        """Write server-side records (and mark a conflict resolved)."""
        async with self._lock:
            for r in records:
                self._put(r)
            self._clock = clock
            if resolved is not None:
                i = resolved - 1
                if 0 <= i < len(self._conflicts):
                    self._conflicts[i] = replace(self._conflicts[i], resolved=True)

    async def get(self, collection: str, id: str) -> Record | None:
        """One record."""
        found = self._records.get((collection, id))
        return None if found is None else found[1]

    async def compact(self, active_since_ms: int) -> int:
        """Drop tombstones at or below every active client's ack."""
        async with self._lock:
            acks = [c.ack_seq for c in self._clients.values() if c.last_seen_ms >= active_since_ms]
            below = min(acks) if acks else self._seq
            doomed = [
                (seq, key) for key, (seq, r) in self._records.items() if r.deleted and seq <= below
            ]
            for seq, key in doomed:
                del self._records[key]
                del self._by_seq[seq]
                self._floor = max(self._floor, seq)
            if doomed:
                self._generation += 1
            return len(doomed)

    async def conflicts(
        self, *, collection: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[ConflictEntry]:
        """Logged conflicts, oldest first."""
        out = [
            c
            for c in self._conflicts
            if (include_resolved or not c.resolved)
            and (collection is None or c.collection == collection)
        ]
        return out[:limit]

    async def get_conflict(self, conflict_id: int) -> ConflictEntry | None:
        """One conflict."""
        i = conflict_id - 1
        return self._conflicts[i] if 0 <= i < len(self._conflicts) else None

    async def status(self) -> StoreStatus:
        """Counts and clients."""
        tomb = sum(1 for _, r in self._records.values() if r.deleted)
        return StoreStatus(
            records=len(self._records) - tomb,
            tombstones=tomb,
            high_seq=self._seq,
            floor=self._floor,
            generation=self._generation,
            unresolved_conflicts=sum(1 for c in self._conflicts if not c.resolved),
            clients=tuple(self._clients.values()),
        )
