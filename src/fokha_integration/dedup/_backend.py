"""What a dedup backend is: the :class:`DedupBackend` protocol and the claim result types.

A backend stores one entry per ``(type, key)``: when it was first seen, when it
expires, its state (claimed, leased and in flight, or committed with a result), an
optional content fingerprint and an optional lease token. Every backend implements
the same semantics, which the shared test suite (``tests/dedup/test_backends.py``)
checks against each of them:

* ``claim`` is atomic: of all concurrent claims of one live key exactly one is
  :attr:`ClaimStatus.FIRST`.
* A live entry answers :attr:`~ClaimStatus.CONFLICT` when both the entry and the
  claim carry a fingerprint and they differ, else :attr:`~ClaimStatus.IN_FLIGHT`
  while a lease is held and not committed, else :attr:`~ClaimStatus.DUPLICATE`.
* An expired entry (TTL or lease ran out) is as good as absent.

This module holds no storage and does no I/O.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol, runtime_checkable

from ..errors import ConfigError, ValidationError

__all__ = [
    "ClaimResult",
    "ClaimStatus",
    "DedupBackend",
    "DedupStats",
    "SyncDedupBackend",
    "check_name",
]


class ClaimStatus(str, Enum):
    """The answer to a claim."""

    FIRST = "first"
    """Nobody holds this key: the caller now does and should act."""
    DUPLICATE = "duplicate"
    """The key was claimed before and is still remembered: do not act again."""
    CONFLICT = "conflict"
    """The key is held with a different fingerprint: the key was reused for other content."""
    IN_FLIGHT = "in_flight"
    """Another holder's lease is active and not committed yet: try again later."""


FIRST = ClaimStatus.FIRST
DUPLICATE = ClaimStatus.DUPLICATE
CONFLICT = ClaimStatus.CONFLICT
IN_FLIGHT = ClaimStatus.IN_FLIGHT


class ClaimResult(NamedTuple):
    """The outcome of one claim (immutable).

    ``first_seen`` is the wall-clock time (Unix seconds) at which the key was first
    claimed; ``expires_at`` the wall-clock time at which the entry is forgotten (the
    lease end while a lease is in flight). ``result`` is what a holder stored with
    :meth:`DedupCache.commit` (``None`` when nothing was stored). ``token`` is set on
    a :attr:`~ClaimStatus.FIRST` result of a leased claim: pass it to ``commit`` and
    ``release`` so a holder whose lease already ran out cannot overwrite the next
    holder. ``degraded`` is true when the backend was unreachable and ``fail_mode``
    is ``"open"``: the answer is FIRST without any dedup having happened.

    It is a named tuple for speed (claims are on the hot path); treat it as a
    record, not as a sequence.
    """

    status: ClaimStatus
    key: str
    first_seen: float
    result: bytes | None = None
    expires_at: float | None = None
    token: str | None = None
    degraded: bool = False

    @property
    def is_first(self) -> bool:
        """Whether the caller won the claim and should act."""
        return self.status is FIRST


@dataclass(frozen=True, slots=True)
class DedupStats:
    """A snapshot of a :class:`DedupCache`'s counters.

    ``first``, ``duplicates``, ``conflicts`` and ``in_flight`` count claim answers;
    ``evictions`` counts live entries the backend dropped to stay within its size
    bound (memory backend); ``fail_open`` counts answers given by failing open
    (``fail_mode="open"``, backend unreachable; each key of a batch counts);
    ``errors`` counts unreachable-backend failures seen (raised or failed open).
    """

    first: int = 0
    duplicates: int = 0
    conflicts: int = 0
    in_flight: int = 0
    evictions: int = 0
    fail_open: int = 0
    errors: int = 0


@runtime_checkable
class DedupBackend(Protocol):
    """Storage for dedup entries; see the module docstring for the shared semantics.

    Times are seconds. ``ttl`` and ``lease`` are relative durations; the backend
    decides which clock measures them (memory: the monotonic clock; SQLite: wall
    time stored as absolute expiry so it survives restarts; Redis: the server's key
    expiry). Unreachable storage raises
    :class:`~fokha_integration.errors.BackendUnavailableError`, other storage
    failures :class:`~fokha_integration.errors.BackendError`.
    """

    name: str

    @property
    def evictions(self) -> int:
        """Live entries dropped to respect a size bound (0 for unbounded backends)."""
        ...

    async def claim(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Atomically claim ``key``; with ``lease`` the entry is in flight for ``lease`` s."""
        ...

    async def claim_many(self, type: str, keys: Sequence[str], ttl: float) -> Sequence[ClaimResult]:
        """Claim each key (no fingerprint, no lease); results in the order of ``keys``."""
        ...

    async def peek(self, type: str, key: str) -> ClaimResult | None:
        """The live entry as a DUPLICATE or IN_FLIGHT result, or ``None``; claims nothing."""
        ...

    async def commit(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        """Store ``result`` and mark the entry done for ``ttl`` s from now.

        Creates the entry when it is absent or expired. Refuses (``False``) when
        ``token`` is given and the live entry belongs to another claim.
        """
        ...

    async def release(self, type: str, key: str, token: str | None) -> bool:
        """Drop a live, not committed entry (``token``, when given, must match)."""
        ...

    async def forget(self, type: str, key: str) -> bool:
        """Drop the entry whatever its state; whether a live one was dropped."""
        ...

    async def clear(self, type: str | None) -> int:
        """Drop every entry (of ``type``, or of all types); how many were dropped."""
        ...

    async def close(self) -> None:
        """Release connections, threads and background tasks (idempotent)."""
        ...


@runtime_checkable
class SyncDedupBackend(DedupBackend, Protocol):
    """A backend that never blocks may also offer synchronous claims.

    :class:`DedupCache` calls these directly on its hot path (no extra coroutine per
    claim). Only backends whose work is pure in-memory bookkeeping should offer them.
    """

    def claim_nowait(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Synchronous :meth:`DedupBackend.claim`."""
        ...

    def claim_many_nowait(
        self, type: str, keys: Sequence[str], ttl: float
    ) -> Sequence[ClaimResult]:
        """Synchronous :meth:`DedupBackend.claim_many`."""
        ...


def warn_aclose(owner: object) -> None:
    """The deprecation warning of the old ``aclose()`` name (``close()`` since 0.2)."""
    warnings.warn(
        f"{type(owner).__name__}.aclose() is deprecated; call close()",
        DeprecationWarning,
        stacklevel=3,
    )


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_name(field: str, value: object, *, config: bool = False) -> str:
    """Validate a type name or namespace: 1..64 characters of ``[A-Za-z0-9_.-]``.

    Raises :class:`ValidationError`, or :class:`ConfigError` when ``config`` is true.
    """
    if not isinstance(value, str) or not _NAME_RE.match(value):
        error = ConfigError if config else ValidationError
        raise error(field, "must be 1..64 characters of [A-Za-z0-9_.-]", value)
    return value
