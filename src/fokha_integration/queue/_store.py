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

import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ClosedError, ConfigError
from ..models import Envelope
from ._types import DeadLetter, OutboxEntry

__all__ = ["MemoryOutboxStore", "OutboxStore"]

_new_entry = tuple.__new__  # builds an OutboxEntry without its keyword-aware __new__


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


class MemoryOutboxStore:
    """The embedded default: in-process, fast, and gone when the process ends.

    ``max_pending`` bounds the pending entries per sink: an append that would pass
    it raises :class:`BackendError` (the publish fails visibly; nothing accepted is
    dropped). ``max_dead_letters`` bounds the dead letters; past it the oldest is
    evicted and counted in :attr:`evicted_dead_letters`.
    """

    def __init__(
        self,
        *,
        max_pending: int = 100_000,
        max_dead_letters: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._max_pending = max_pending
        self._max_dead = max_dead_letters
        self._clock = clock
        self._seq = itertools.count(1)
        # Per sink: pending entries by ref (insertion order is enqueue order) and the
        # refs not leased yet. One ref per envelope, shared by every sink's entry.
        self._pending: dict[str, dict[str, OutboxEntry]] = {}
        self._ready: dict[str, deque[str]] = {}
        # Envelope id -> how many sinks still hold it (a repeated append is refused).
        self._ids: dict[str, int] = {}
        self._dead: OrderedDict[int, DeadLetter] = OrderedDict()
        self._closed = False
        self.evicted_dead_letters = 0
        """Dead letters dropped because ``max_dead_letters`` was reached."""

    async def open(self, sinks: Sequence[str]) -> None:
        """Register ``sinks``."""
        self._closed = False
        for name in sinks:
            self._pending.setdefault(name, {})
            self._ready.setdefault(name, deque())

    async def close(self) -> None:
        """Mark closed (the content stays for a later :meth:`open` of this object)."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the memory outbox store is closed")

    def _add(self, sink: str, envelope: Envelope, enqueued_at: float) -> None:
        ref = str(next(self._seq))
        self._pending[sink][ref] = OutboxEntry(sink, ref, envelope, enqueued_at)
        self._ready[sink].append(ref)
        self._ids[envelope.id] = self._ids.get(envelope.id, 0) + 1

    def _forget(self, envelope_id: str) -> None:
        left = self._ids.get(envelope_id, 0) - 1
        if left <= 0:
            self._ids.pop(envelope_id, None)
        else:
            self._ids[envelope_id] = left

    async def append(self, envelope: Envelope) -> bool:
        """Add ``envelope`` for every registered sink."""
        self._check()
        pendings = self._pending
        if not pendings:
            raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
        if envelope.id in self._ids:
            return False
        limit = self._max_pending
        for sink, pending in pendings.items():
            if len(pending) >= limit:
                raise BackendError("memory", f"outbox for sink {sink!r} is full")
        # The hot path of every publish: one ref and one refcount for all sinks.
        now = self._clock.time()
        ref = str(next(self._seq))
        ready = self._ready
        for sink, pending in pendings.items():
            pending[ref] = _new_entry(OutboxEntry, (sink, ref, envelope, now))
            ready[sink].append(ref)
        self._ids[envelope.id] = len(pendings)
        return True

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Lease up to ``limit`` entries of ``sink``."""
        self._check()
        ready = self._ready[sink]
        pending = self._pending[sink]
        out: list[OutboxEntry] = []
        while ready and len(out) < limit:
            entry = pending.get(ready.popleft())
            if entry is not None:
                out.append(entry)
        return out

    async def ack(self, entry: OutboxEntry) -> None:
        """Remove ``entry``."""
        if self._pending[entry.sink].pop(entry.ref, None) is not None:
            self._forget(entry.envelope.id)

    async def release(self, entry: OutboxEntry) -> None:
        """Make ``entry`` fetchable again."""
        if entry.ref in self._pending[entry.sink]:
            self._ready[entry.sink].appendleft(entry.ref)

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Move ``entry`` to the dead letters."""
        await self.ack(entry)
        self._dead[next(self._seq)] = letter
        while len(self._dead) > self._max_dead:
            self._dead.popitem(last=False)
            self.evicted_dead_letters += 1

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""
        out: list[DeadLetter] = []
        for ref, letter in self._dead.items():
            if sink is None or letter.sink == sink:
                out.append(_with_ref(letter, str(ref)))
                if len(out) >= limit:
                    break
        return out

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """Put dead letters back to pending."""
        self._check()
        wanted = None if refs is None else {int(r) for r in refs}
        chosen = [
            ref
            for ref, letter in self._dead.items()
            if (sink is None or letter.sink == sink) and (wanted is None or ref in wanted)
        ]
        now = self._clock.time()
        for ref in chosen:
            letter = self._dead.pop(ref)
            if letter.sink in self._pending:
                self._add(letter.sink, letter.envelope, now)
        return len(chosen)

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """Pending count and the oldest enqueue time."""
        pending = self._pending[sink]
        if not pending:
            return 0, None
        return len(pending), next(iter(pending.values())).enqueued_at


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
