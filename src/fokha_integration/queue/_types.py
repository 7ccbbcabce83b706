"""The small shapes the signal queue meets its parts through.

A *sink* is anything with ``name``, ``guarantee``, ``execution`` and
``async def deliver(envelope)``; a *deduper* is anything with
``claim``/``commit``/``release`` as :class:`~fokha_integration.dedup.DedupCache`
has them. Nothing here does I/O.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..dedup import DedupCache, MemoryDedupBackend
from ..errors import ConfigError, FokhaError
from ..models import Envelope

__all__ = [
    "AttemptRecord",
    "BadSinkResultError",
    "ClaimOutcome",
    "DeadLetter",
    "Deduper",
    "DeliveryFailedError",
    "DeliveryResult",
    "Guarantee",
    "MemoryDeduper",
    "OutboxEntry",
    "PublishResult",
    "QueueStats",
    "Sink",
    "SinkMetrics",
    "SinkStats",
]

Guarantee = Literal["at_most_once", "at_least_once"]
"""``at_most_once``: never delivered twice, may be missed (live display).
``at_least_once``: never lost, may be delivered again (receivers dedup on the id)."""

ClaimStatus = Literal["first", "duplicate", "conflict", "in_flight"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a sink may return from ``deliver``: ``ok=False`` is a final refusal.

    The delivery outcome contract, all of it:

    - return ``None`` or ``DeliveryResult()`` (``ok=True``): delivered;
    - return ``DeliveryResult(ok=False, reason=...)`` (e.g. the EA answered
      ``rejected``): a final refusal, dead-lettered with reason ``"rejected"``;
    - raise: the attempt failed; retried per the sink's :class:`RetryPolicy`;
    - return anything else (``True``, ``"ok"``, a dict): a bug in the sink, never
      read as success or failure: the entry is dead-lettered at once with reason
      ``"bad_sink_result"`` (see :class:`BadSinkResultError`) and not retried.
    """

    ok: bool = True
    reason: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        # A sink returns this; a wrong type here is a bug in the sink, said at once.
        check.boolean("ok", self.ok)
        check.string("reason", self.reason, non_empty=False, max_length=200)
        check.string("detail", self.detail, non_empty=False, max_length=2000)


class DeliveryFailedError(FokhaError):
    """A sink's delivery attempt failed; ``status`` and ``retry_after`` guide the retry.

    ``status`` (an HTTP-like code, or ``None``) is what :class:`RetryPolicy` looks at
    to decide whether to retry; ``retry_after`` (seconds) makes the next wait exactly
    that long.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class BadSinkResultError(FokhaError):
    """A sink's ``deliver`` returned something other than ``None`` or a :class:`DeliveryResult`.

    The queue never guesses what ``True``, ``"ok"`` or a dict meant: the entry is
    dead-lettered with reason ``"bad_sink_result"`` and this error's text as detail.
    ``sink`` names the sink, ``result_type`` the type it returned.
    """

    def __init__(self, sink: str, result: object) -> None:
        self.sink = sink
        self.result_type = type(result).__name__
        super().__init__(
            f"sink {sink!r} returned a {self.result_type} ({result!r:.80}); deliver() must "
            "return None or a DeliveryResult, or raise"
        )


@runtime_checkable
class Sink(Protocol):
    """Somewhere the queue delivers envelopes to.

    ``name`` must be unique within a queue and stable across restarts (it names the
    sink's cursor in the store). ``execution`` marks sinks that act on signals
    (they never receive an expired signal).
    """

    @property
    def name(self) -> str:
        """Unique, stable name of this sink."""
        ...

    @property
    def guarantee(self) -> Guarantee:
        """``"at_most_once"`` or ``"at_least_once"``."""
        ...

    @property
    def execution(self) -> bool:
        """Whether this sink executes signals (expired ones are never sent to it)."""
        ...

    async def deliver(self, envelope: Envelope) -> DeliveryResult | None:
        """Deliver one envelope; raise to ask for a retry, return ``ok=False`` to refuse."""
        ...


class ClaimOutcome(Protocol):
    """What a deduper's ``claim`` returns: a ``status`` and, for a leased claim, a ``token``."""

    @property
    def status(self) -> str:
        """``"first"``, ``"duplicate"``, ``"conflict"`` or ``"in_flight"``."""
        ...

    @property
    def token(self) -> str | None:
        """The lease's token on a ``"first"`` answer to a leased claim, else ``None``."""
        ...


@runtime_checkable
class Deduper(Protocol):
    """Atomic seen-or-claim with leases (:class:`~fokha_integration.dedup.DedupCache` is one).

    The queue claims a key with ``lease`` seconds: the key is ``"in_flight"`` until
    :meth:`commit` (called once the store holds the envelope) keeps it for the
    type's TTL, or :meth:`release` (the store write failed) frees it. A claim that
    reached the backend although the publish was cancelled or timed out frees
    itself when its lease runs out, so a repeated publish succeeds then.
    ``fingerprint`` is a digest of the content: the same key with a different
    fingerprint is a ``"conflict"``.
    """

    async def claim(
        self,
        key: str,
        *,
        type: str,
        fingerprint: str | None = None,
        lease: float | None = None,
    ) -> ClaimOutcome:
        """Claim ``key``; see the class docstring for the statuses."""
        ...

    async def commit(self, key: str, *, type: str, token: str | None = None) -> object:
        """Keep the claim on ``key`` for good (its envelope is stored); the result is ignored."""
        ...

    async def release(self, key: str, *, type: str, token: str | None = None) -> object:
        """Forget the claim on ``key`` (its publish did not happen); the result is ignored."""
        ...


def memory_deduper(
    *, max_keys: int = 100_000, ttl: float = 24 * 3600.0, clock: Clock = SYSTEM_CLOCK
) -> DedupCache:
    """The queue's default deduper: a :class:`DedupCache` on the memory backend.

    It remembers the last ``max_keys`` keys of every type for ``ttl`` seconds,
    forgets on restart and is not shared between processes: give the queue a
    ``DedupCache`` on SQLite or Redis for that.
    """
    return DedupCache(
        MemoryDedupBackend(max_entries=check.integer("max_keys", max_keys, minimum=1), clock=clock),
        ttl_by_type={},
        default_ttl=check.positive("ttl", ttl),
        clock=clock,
    )


class MemoryDeduper(DedupCache):
    """Deprecated: use :func:`memory_deduper` (a ``DedupCache`` on the memory backend).

    Kept so existing code runs; it is that same cache, with a
    :class:`DeprecationWarning` when built.
    """

    def __init__(
        self, *, max_keys: int = 100_000, ttl: float = 24 * 3600.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        warnings.warn(
            "MemoryDeduper is deprecated; the queue's default is memory_deduper(), "
            "a DedupCache on the memory backend",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(
            MemoryDedupBackend(
                max_entries=check.integer("max_keys", max_keys, minimum=1), clock=clock
            ),
            ttl_by_type={},
            default_ttl=check.positive("ttl", ttl),
            clock=clock,
        )


PublishStatus = Literal["accepted", "duplicate", "conflict"]


class PublishResult(NamedTuple):
    """The answer of :meth:`SignalQueue.publish` (an immutable named tuple).

    ``status`` is ``"accepted"`` (durably stored; it will be delivered),
    ``"duplicate"`` (the key was seen before; nothing stored) or ``"conflict"``
    (the key was seen before with different content). ``id`` is the envelope id.
    ``in_flight`` is true for a duplicate whose first publish has not finished yet.
    A named tuple rather than a dataclass: one is built per publish, and a tuple is
    built in a fifth of the time of a frozen dataclass.
    """

    status: PublishStatus
    id: str
    key: str
    in_flight: bool = False

    @property
    def accepted(self) -> bool:
        """Whether the envelope was stored for delivery."""
        return self.status == "accepted"


class OutboxEntry(NamedTuple):
    """One envelope pending for one sink, as a store hands it out (immutable).

    ``ref`` is the store's handle for acknowledging it (a row number, a stream id);
    ``enqueued_at`` is the wall time the store accepted it. A named tuple rather than
    a dataclass: stores make three or more of these per published envelope, and a
    tuple is built in a fifth of the time of a frozen dataclass.
    """

    sink: str
    ref: str
    envelope: Envelope
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt: its number (1-based), when (wall time), how long, and why it failed."""

    attempt: int
    at: float
    duration: float
    error: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "attempt": self.attempt,
            "at": self.at,
            "duration": self.duration,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptRecord:
        """The inverse of :meth:`to_dict`."""
        return cls(
            attempt=int(data["attempt"]),
            at=float(data["at"]),
            duration=float(data["duration"]),
            error=str(data["error"]),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An envelope a sink gave up on, with the reason and every attempt.

    ``reason`` is one of ``"max_attempts"``, ``"not_retryable"``, ``"rejected"``
    (the sink refused it), ``"bad_sink_result"`` (the sink returned something that
    is neither ``None`` nor a :class:`DeliveryResult`), ``"expired"`` (a stale
    signal for an execution sink), ``"deadline"`` or ``"at_most_once_failed"``.
    ``ref`` is the store's handle for :meth:`SignalQueue.replay_dead_letters`.
    """

    sink: str
    envelope: Envelope
    reason: str
    detail: str
    attempts: tuple[AttemptRecord, ...]
    dead_at: float
    ref: str = ""

    def to_json(self) -> str:
        """JSON text of everything but ``ref`` (stores keep that themselves)."""
        return json.dumps(
            {
                "sink": self.sink,
                "envelope": self.envelope.to_dict(),
                "reason": self.reason,
                "detail": self.detail,
                "attempts": [a.to_dict() for a in self.attempts],
                "dead_at": self.dead_at,
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, ref: str = "") -> DeadLetter:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            sink=str(data["sink"]),
            envelope=Envelope.from_dict(data["envelope"]),
            reason=str(data["reason"]),
            detail=str(data.get("detail", "")),
            attempts=tuple(AttemptRecord.from_dict(a) for a in data.get("attempts", ())),
            dead_at=float(data["dead_at"]),
            ref=ref,
        )


@dataclass(slots=True)
class SinkMetrics:
    """Counters and gauges of one sink.

    ``delivered``/``retried``/``dead_lettered`` count since this queue started;
    ``pending`` is entries waiting in the store (including in flight); ``lag`` is
    seconds from enqueue to delivery of the last delivered entry;
    ``oldest_pending_age`` is seconds since the oldest pending entry was enqueued
    (0 when none). ``breaker`` is the sink's breaker state. ``store_rewinds`` is
    :attr:`QueueStats.store_rewinds` (the store's, the same for every sink).
    """

    name: str
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    pending: int = 0
    in_flight: int = 0
    lag: float = 0.0
    oldest_pending_age: float = 0.0
    breaker: str = "closed"
    store_rewinds: int = 0


@dataclass(frozen=True, slots=True)
class SinkStats:
    """A snapshot of one sink's counters (see :meth:`SignalQueue.stats`).

    ``delivered``/``retried``/``dead_lettered`` count since the queue started;
    ``in_flight`` is entries this process holds for the sink now; ``lag`` is
    seconds from enqueue to delivery of the last delivered entry;
    ``store_errors`` counts store writes (acks, dead letters) that failed and were
    retried; ``breaker`` is the sink's breaker state.
    """

    name: str
    delivered: int
    retried: int
    dead_lettered: int
    in_flight: int
    lag: float
    store_errors: int
    breaker: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of a :class:`SignalQueue`'s counters: publishes and one entry per sink.

    ``store_rewinds``: times the store found its history moved backwards (the Redis
    Streams store: Redis restarted from an older snapshot); ``store_rewound``: the
    appends those rewinds went back, summed (envelopes appended in that span and
    not yet fetched are lost). Both stay 0 for stores that cannot rewind.
    """

    accepted: int
    duplicates: int
    conflicts: int
    sinks: tuple[SinkStats, ...]
    store_rewinds: int = 0
    store_rewound: int = 0

    def sink(self, name: str) -> SinkStats:
        """The snapshot of the sink called ``name``."""
        for stats in self.sinks:
            if stats.name == name:
                return stats
        raise KeyError(name)


def sink_names(sinks: Sequence[Sink]) -> list[str]:
    """The names of ``sinks``, checked unique."""
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ConfigError("sinks", "sink names must be unique", names)
    return names
