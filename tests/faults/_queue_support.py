"""Helpers for the queue's fault tests: a ledger of deliveries and the invariant check.

The invariant every queue fault test asserts: each accepted envelope reached each
sink exactly once, or was dead-lettered for that sink with a reason; and no entry
was handed to a sink more often than the retry policy's attempts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fokha_integration.models import Envelope
from fokha_integration.queue import (
    CallableSink,
    DeliveryResult,
    MemoryOutboxStore,
    OutboxStore,
    SignalQueue,
    SQLiteOutboxStore,
)

Body = Callable[[Envelope], Awaitable[Any]]


class Ledger:
    """Counts every call a sink gets, per envelope id, and which calls succeeded."""

    def __init__(self) -> None:
        self.calls: dict[str, Counter[str]] = {}
        self.ok: dict[str, Counter[str]] = {}

    def sink(self, name: str, body: Body | None = None, **kw: Any) -> CallableSink:
        """A sink called ``name`` that records each call, then runs ``body`` (if any)."""
        calls = self.calls.setdefault(name, Counter())
        ok = self.ok.setdefault(name, Counter())

        async def deliver(envelope: Envelope) -> Any:
            calls[envelope.id] += 1
            result = None if body is None else await body(envelope)
            if result is None or (isinstance(result, DeliveryResult) and result.ok):
                ok[envelope.id] += 1
            return result

        return CallableSink(deliver, name=name, **kw)

    def total(self, name: str) -> int:
        """Every call the sink ``name`` got."""
        return sum(self.calls[name].values())


async def check_invariant(
    queue: SignalQueue, ledger: Ledger, accepted: list[str], *, attempts: int
) -> dict[str, dict[str, str]]:
    """Assert the invariant for every sink; returns sink -> envelope id -> dead reason."""
    reasons: dict[str, dict[str, str]] = {}
    for name in ledger.calls:
        letters = await queue.dead_letters(name, limit=100_000)
        dead = {letter.envelope.id: letter.reason for letter in letters}
        reasons[name] = dead
        for eid in accepted:
            delivered = ledger.ok[name][eid]
            assert (delivered == 1) != (eid in dead), (
                f"sink {name!r}, envelope {eid}: delivered {delivered} time(s), "
                f"dead-lettered: {dead.get(eid)!r}"
            )
            if eid in dead:
                assert dead[eid], f"sink {name!r}: dead letter of {eid} has no reason"
            assert ledger.calls[name][eid] <= attempts, (
                f"sink {name!r}: {eid} was handed over {ledger.calls[name][eid]} times "
                f"(retry policy allows {attempts})"
            )
    return reasons


def make_store(kind: str, tmp_path: Path, **kw: Any) -> OutboxStore:
    """A fresh outbox store of ``kind`` (``memory`` or ``sqlite``)."""
    if kind == "memory":
        return MemoryOutboxStore(**kw)
    return SQLiteOutboxStore(tmp_path / "outbox.db", **kw)
