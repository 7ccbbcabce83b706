"""The outbox store protocol and its embedded default, the in-memory store.

A store keeps, per registered sink, the envelopes not yet delivered to that sink
and the dead letters. Every backend (memory, SQLite, Redis Streams) implements
:class:`OutboxStore` and passes the same shared test suite
(``tests/queue/test_stores.py``).

Leases: :meth:`OutboxStore.fetch` hands out entries *leased to this store object*
until :meth:`~OutboxStore.ack`, :meth:`~OutboxStore.dead_letter` or
:meth:`~OutboxStore.release`. A new store object (a restarted process) holds no
leases, so it is handed every entry still pending: that is how deliveries resume
after a crash.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ClosedError, ConfigError
from ..models import Envelope
from ._types import DeadLetter, OutboxEntry

__all__ = ["FastOutboxStore", "MemoryOutboxStore", "OutboxStore", "WatchedOutboxStore"]


@runtime_checkable
class OutboxStore(Protocol):
    """Where accepted envelopes wait for each sink (see the module docstring)."""

    async def open(self, sinks: Sequence[str]) -> None:
        """Get ready and register ``sinks`` (idempotent; later appends fan out to them)."""
        ...

    async def close(self) -> None:
        """Release resources; entries still leased stay pending for the next opener."""
        ...

    async def append(self, envelope: Envelope) -> bool:
        """Store ``envelope`` durably for every registered sink.

        Returns ``False`` when an envelope with the same id is already pending (then
        nothing is added). Returns only once the store has accepted it durably.
        Raises :class:`ConfigError` when no sink is registered (it would reach nobody).
        """
        ...

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` pending entries of ``sink`` not leased yet, oldest first; leases them."""
        ...

    async def ack(self, entry: OutboxEntry) -> None:
        """``entry`` was delivered (or given up on): remove it (idempotent)."""
        ...

    async def release(self, entry: OutboxEntry) -> None:
        """Give back the lease on ``entry``: it will be fetched again."""
        ...

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Remove ``entry`` from pending and keep ``letter`` (atomically where possible)."""
        ...

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters (of ``sink``, or of all sinks)."""
        ...

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """Put dead letters (of ``sink``; only ``refs`` when given) back to pending.

        Returns how many were replayed. The envelope id does not change.
        """
        ...

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """``(pending count, wall time the oldest pending entry was enqueued)``."""
        ...


@runtime_checkable
class FastOutboxStore(OutboxStore, Protocol):
    """An :class:`OutboxStore` that also acknowledges without the caller waiting.

    :class:`SignalQueue` calls ``ack_nowait`` instead of ``ack`` when the store has
    it (the memory and SQLite stores): no coroutine per delivery, and the store
    groups the writes. It must not lose an acknowledgement: when the write fails,
    the entry stays leased (never handed out again by this store object) and the
    write is retried; what is still unacknowledged at close is pending for the next
    opener (at-least-once).
    """

    def ack_nowait(self, entry: OutboxEntry) -> None:
        """:meth:`OutboxStore.ack`, without waiting for the write."""
        ...


@runtime_checkable
class WatchedOutboxStore(OutboxStore, Protocol):
    """An :class:`OutboxStore` that says when appended entries can be fetched.

    A store whose appends complete on another thread (SQLite) calls the watchers in
    the event loop the moment the rows are committed: :class:`SignalQueue` wakes its
    workers from there, one loop turn before the publish that appended resumes.
    """

    def watch_appends(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (no arguments, in the loop) whenever appended entries
        became fetchable; returns the function that stops it."""
        ...


class _Slot:
    """One appended envelope in the memory store's log, shared by every sink."""

    __slots__ = ("enqueued_at", "envelope", "holders", "place", "ref")

    def __init__(
        self,
        ref: str,
        envelope: Envelope,
        enqueued_at: float,
        holders: int,
        place: tuple[int, int] | None = None,
    ) -> None:
        self.ref = ref
        self.envelope = envelope
        self.enqueued_at = enqueued_at
        self.holders = holders  # sinks that still have to deliver it
        self.place = place  # a replayed dead letter's place in append order

    def entry(self, sink: str) -> OutboxEntry:
        """This slot as ``sink``'s entry."""
        return OutboxEntry(sink, self.ref, self.envelope, self.enqueued_at)

    def order(self) -> tuple[int, int]:
        """Where this slot stands in append order: its seq, or a replay's place."""
        return self.place if self.place is not None else (int(self.ref), 0)


class MemoryOutboxStore:
    """The embedded default: in-process, fast, and gone when the process ends.

    ``max_pending`` bounds the pending entries per sink: an append that would pass
    it raises :class:`BackendError` (the publish fails visibly; nothing accepted is
    dropped). ``max_dead_letters`` bounds the dead letters; past it the oldest is
    evicted and counted in :attr:`evicted_dead_letters`.

    It is a :class:`FastOutboxStore`: :class:`SignalQueue` acknowledges through
    :meth:`ack_nowait`. A subclass that overrides ``ack`` must override it too.
    """

    def __init__(
        self,
        *,
        max_pending: int = 100_000,
        max_dead_letters: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._max_pending = check.integer("max_pending", max_pending, minimum=1)
        self._max_dead = check.integer("max_dead_letters", max_dead_letters, minimum=0)
        self._clock = clock
        self._now = time.time if clock is SYSTEM_CLOCK else clock.time
        # One shared log of slots, in append order, for every sink; each sink reads it
        # through its own cursor (the seq of the next slot it has not fetched); once
        # no sink holds the oldest slots they are trimmed. Appending is thus one slot
        # for any number of sinks, and a sink's entry is only built when it fetches.
        self._log: list[_Slot] = []
        self._base = 1  # seq of self._log[0]
        self._live = 0  # index in self._log of the oldest slot some sink still holds
        self._next = 1  # seq of the next append
        self._cursor: dict[str, int] = {}
        # Per sink: leased entries (ref -> slot), and entries to hand out before the
        # log (released ones, replayed dead letters), each with its slot.
        self._leased: dict[str, dict[str, _Slot]] = {}
        self._redo: dict[str, deque[_Slot]] = {}
        # Envelope id -> live slots with it (a repeated append is refused).
        self._ids: dict[str, int] = {}
        self._seq = itertools.count(1)  # dead-letter refs
        # A dead letter and its entry's place in append order (where a replay puts it).
        self._dead: OrderedDict[int, tuple[DeadLetter, tuple[int, int]]] = OrderedDict()
        self._closed = False
        self.evicted_dead_letters = 0
        """Dead letters dropped because ``max_dead_letters`` was reached."""

    async def open(self, sinks: Sequence[str]) -> None:
        """Register ``sinks`` (a new one gets what is appended from now on)."""
        self._closed = False
        for name in sinks:
            if name not in self._cursor:
                self._cursor[name] = self._next
                self._leased[name] = {}
                self._redo[name] = deque()

    async def close(self) -> None:
        """Mark closed; the content stays for a later :meth:`open` of this object.

        Leased entries become fetchable again, in append order, as a restarted
        process would find them in a durable store.
        """
        self._closed = True
        for sink, leased in self._leased.items():
            if leased:
                self._give_back(sink, list(leased.values()))
                leased.clear()

    def _give_back(self, sink: str, slots: list[_Slot]) -> None:
        """Make leased entries fetchable again, each in its place in append order
        (entries given back in any order keep a key's order)."""
        slots.extend(self._redo[sink])
        slots.sort(key=_Slot.order)
        self._redo[sink] = deque(slots)

    def _pending_count(self, sink: str) -> int:
        return self._next - self._cursor[sink] + len(self._leased[sink]) + len(self._redo[sink])

    def append_nowait(self, envelope: Envelope) -> bool:
        """:meth:`append` without waiting (nothing here waits)."""
        if self._closed:
            raise ClosedError("the memory outbox store is closed")
        sinks = len(self._cursor)
        if not sinks:
            raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
        ids = self._ids
        eid = envelope.id
        if eid in ids:
            return False
        seq = self._next
        if seq - self._base - self._live >= self._max_pending:
            # The live log is as long as the bound: look at each sink's own count.
            for sink in self._cursor:
                if self._pending_count(sink) >= self._max_pending:
                    raise BackendError("memory", f"outbox for sink {sink!r} is full")
        self._log.append(_Slot(str(seq), envelope, self._now(), sinks))
        self._next = seq + 1
        ids[eid] = 1
        return True

    async def append(self, envelope: Envelope) -> bool:
        """Add ``envelope`` for every registered sink."""
        return self.append_nowait(envelope)

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Lease up to ``limit`` entries of ``sink``."""
        if self._closed:
            raise ClosedError("the memory outbox store is closed")
        leased = self._leased[sink]
        out: list[OutboxEntry] = []
        redo = self._redo[sink]
        while redo and len(out) < limit:
            slot = redo.popleft()
            leased[slot.ref] = slot
            out.append(slot.entry(sink))
        cursor = self._cursor[sink]
        room = limit - len(out)
        if cursor < self._next and room > 0:
            at = cursor - self._base
            chunk = self._log[at : at + room]
            for slot in chunk:
                leased[slot.ref] = slot
                out.append(slot.entry(sink))
            self._cursor[sink] = cursor + len(chunk)
        return out

    def ack_nowait(self, entry: OutboxEntry) -> None:
        """:meth:`ack` without waiting."""
        slot = self._leased[entry.sink].pop(entry.ref, None)
        if slot is None:
            return
        slot.holders -= 1
        if not slot.holders:
            self._done(slot)

    def _done(self, slot: _Slot) -> None:
        # No sink holds this slot any more: forget its id, trim the log's head.
        ids = self._ids
        eid = slot.envelope.id
        left = ids.pop(eid, 1) - 1  # almost always the envelope's only slot
        if left > 0:
            ids[eid] = left
        log = self._log
        live = self._live
        end = len(log)
        while live < end and not log[live].holders:
            live += 1
        if live >= 1024 and live * 2 >= end:
            del log[:live]
            self._base += live
            live = 0
        self._live = live

    async def ack(self, entry: OutboxEntry) -> None:
        """Remove ``entry``."""
        self.ack_nowait(entry)

    async def release(self, entry: OutboxEntry) -> None:
        """Make ``entry`` fetchable again, in its place in append order."""
        slot = self._leased[entry.sink].pop(entry.ref, None)
        if slot is not None:
            self._give_back(entry.sink, [slot])

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Move ``entry`` to the dead letters."""
        slot = self._leased[entry.sink].get(entry.ref)
        place = slot.order() if slot is not None else (self._next - 1, next(self._seq))
        self.ack_nowait(entry)
        self._dead[next(self._seq)] = (letter, place)
        while len(self._dead) > self._max_dead:
            self._dead.popitem(last=False)
            self.evicted_dead_letters += 1

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""
        out: list[DeadLetter] = []
        for ref, (letter, _) in self._dead.items():
            if sink is None or letter.sink == sink:
                out.append(_with_ref(letter, str(ref)))
                if len(out) >= limit:
                    break
        return out

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """Put dead letters back to pending."""
        if self._closed:
            raise ClosedError("the memory outbox store is closed")
        wanted = None if refs is None else {int(r) for r in refs}
        chosen = [
            ref
            for ref, (letter, _) in self._dead.items()
            if (sink is None or letter.sink == sink) and (wanted is None or ref in wanted)
        ]
        now = self._clock.time()
        for ref in chosen:
            letter, place = self._dead.pop(ref)
            if letter.sink not in self._redo:  # a sink no longer registered
                continue
            # A slot of its own, outside the log, held by this one sink, back in its
            # entry's place in append order (as the SQLite store's row keeps its seq):
            # a key's entries still pending come after it.
            self._give_back(letter.sink, [_Slot(f"r{ref}", letter.envelope, now, 1, place)])
            eid = letter.envelope.id
            self._ids[eid] = self._ids.get(eid, 0) + 1
        return len(chosen)

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """Pending count and the oldest enqueue time."""
        cursor = self._cursor[sink]
        times = [slot.enqueued_at for slot in self._leased[sink].values()]
        times.extend(slot.enqueued_at for slot in self._redo[sink])
        if cursor < self._next:
            times.append(self._log[cursor - self._base].enqueued_at)
        if not times:
            return 0, None
        return self._pending_count(sink), min(times)


def _with_ref(letter: DeadLetter, ref: str) -> DeadLetter:
    return DeadLetter(
        sink=letter.sink,
        envelope=letter.envelope,
        reason=letter.reason,
        detail=letter.detail,
        attempts=letter.attempts,
        dead_at=letter.dead_at,
        ref=ref,
    )


K = TypeVar("K")


class EnvelopeCache(Generic[K]):
    """Envelopes parsed (and validated) once for every sink's copy of the same stored row.

    Bounded: past ``limit`` the oldest is dropped. Keyed by what the store has at hand
    (a row's seq, a stream entry's text).
    """

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int = 8192) -> None:
        self._items: OrderedDict[K, Envelope] = OrderedDict()
        self._limit = limit

    def get(self, key: K) -> Envelope | None:
        """The cached envelope of ``key``, if any."""
        return self._items.get(key)

    def put(self, key: K, envelope: Envelope) -> None:
        """Remember ``envelope`` under ``key`` (an append already has it parsed)."""
        self._items[key] = envelope
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def parse(self, key: K, data: str | bytes) -> Envelope:
        """The envelope of ``key``: cached, or parsed from ``data`` and cached."""
        found = self._items.get(key)
        if found is None:
            found = Envelope.from_json(data)
            self.put(key, found)
        return found


T = TypeVar("T")


class TurnBatch(Generic[T]):
    """Calls gathered over one event-loop turn, handed to ``flush`` as one list.

    The stores send the appends (or acknowledgements) made in one loop turn in one
    statement, pipeline or commit, and still answer each caller: the first item of a
    turn schedules :meth:`flush` with ``call_soon``, and ``limit`` items flush at once
    (what comes after starts a new batch).
    """

    __slots__ = ("_flush", "_items", "_limit")

    def __init__(self, flush: Callable[[list[T]], None], limit: int) -> None:
        self._flush = flush
        self._limit = limit
        self._items: list[T] | None = None

    def add(self, item: T) -> None:
        """Gather ``item`` into this turn's batch."""
        items = self._items
        if items is None:
            items = self._items = []
            asyncio.get_running_loop().call_soon(self.flush)
        items.append(item)
        if len(items) >= self._limit:
            self.flush()

    def flush(self) -> None:
        """Hand what was gathered to ``flush`` now (nothing gathered: no call)."""
        items, self._items = self._items, None
        if items:
            self._flush(items)

    def __len__(self) -> int:
        return len(self._items) if self._items else 0
