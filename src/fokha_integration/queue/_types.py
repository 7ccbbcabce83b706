"""The small shapes the signal queue meets its parts through.

A *sink* is anything with ``name``, ``guarantee``, ``execution`` and
``async def deliver(envelope)``; a *deduper* is anything with
``async def claim(key, *, type, fingerprint=None)`` returning an object whose
``status`` is ``"first"``, ``"duplicate"``, ``"conflict"`` or ``"in_flight"``.
Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import FokhaError
from ..models import Envelope

__all__ = [
    "AttemptRecord",
    "ClaimOutcome",
    "DeadLetter",
    "Deduper",
    "DeliveryFailedError",
    "DeliveryResult",
    "Guarantee",
    "MemoryDeduper",
    "OutboxEntry",
    "PublishResult",
    "Sink",
    "SinkMetrics",
]

Guarantee = Literal["at_most_once", "at_least_once"]
"""``at_most_once``: never delivered twice, may be missed (live display).
``at_least_once``: never lost, may be delivered again (receivers dedup on the id)."""

ClaimStatus = Literal["first", "duplicate", "conflict", "in_flight"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What a sink may return from ``deliver``: ``ok=False`` is a final refusal.

    Returning ``None`` (or ``DeliveryResult()``) means delivered. A result with
    ``ok=False`` (e.g. the EA answered ``rejected``) is not retried: the entry is
    dead-lettered with ``reason``. To ask for a retry, raise an exception instead.
    """

    ok: bool = True
    reason: str = ""
    detail: str = ""


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
    """What a deduper's ``claim`` returns: something with a ``status``."""

    @property
    def status(self) -> str:
        """``"first"``, ``"duplicate"``, ``"conflict"`` or ``"in_flight"``."""
        ...


@runtime_checkable
class Deduper(Protocol):
    """Atomic seen-or-claim: the first claim of a key wins, later ones are duplicates.

    ``fingerprint`` is a digest of the content: the same key with a different
    fingerprint is a ``"conflict"`` (a producer bug worth surfacing).
    ``release`` forgets a claim whose publish failed, so the producer may retry.
    """

    async def claim(self, key: str, *, type: str, fingerprint: str | None = None) -> ClaimOutcome:
        """Claim ``key``; see the class docstring for the statuses."""
        ...

    async def release(self, key: str, *, type: str) -> object:
        """Forget the claim on ``key`` (its publish did not happen); the result is ignored."""
        ...


@dataclass(frozen=True, slots=True)
class _Claim:
    status: ClaimStatus


class MemoryDeduper:
    """An in-process :class:`Deduper`: the last ``max_keys`` keys for ``ttl`` seconds.

    The default of :class:`SignalQueue` when no deduper is given. It forgets on
    restart and is not shared between processes: give the queue a ``DedupCache``
    (SQLite or Redis) for that. Oldest keys are evicted first when ``max_keys`` is
    reached.
    """

    def __init__(
        self, *, max_keys: int = 100_000, ttl: float = 24 * 3600.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._clock = clock
        self._max = max_keys
        self._ttl = ttl
        self._seen: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()

    async def claim(self, key: str, *, type: str, fingerprint: str | None = None) -> _Claim:
        """Claim ``key`` (see :class:`Deduper`)."""
        now = self._clock.monotonic()
        slot = (type, key)
        seen = self._seen.get(slot)
        if seen is not None and now - seen[0] < self._ttl:
            if fingerprint is not None and seen[1] is not None and seen[1] != fingerprint:
                return _Claim("conflict")
            return _Claim("duplicate")
        self._seen[slot] = (now, fingerprint)
        self._seen.move_to_end(slot)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return _Claim("first")

    async def release(self, key: str, *, type: str) -> None:
        """Forget ``key``."""
        self._seen.pop((type, key), None)


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
    (the sink refused it), ``"expired"`` (a stale signal for an execution sink),
    ``"deadline"`` or ``"at_most_once_failed"``. ``ref`` is the store's handle for
    :meth:`SignalQueue.replay_dead_letters`.
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
    (0 when none). ``breaker`` is the sink's breaker state.
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


def sink_names(sinks: Sequence[Sink]) -> list[str]:
    """The names of ``sinks``, checked unique."""
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ValueError(f"sink names must be unique: {names}")
    return names
