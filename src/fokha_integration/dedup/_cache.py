"""DedupCache: the atomic "have we seen this?" in front of anything that must happen once.

It owns the policy (TTL per message type, fail mode, limits, counters); the backend
owns the storage. It does not decide what a key is (see the key builders) and does
not retry backend calls (a retry would hide an outage the fail mode must see).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendUnavailableError, ConfigError, ValidationError
from ._backend import (
    CONFLICT,
    DUPLICATE,
    FIRST,
    ClaimResult,
    DedupBackend,
    DedupStats,
    check_name,
    warn_aclose,
)
from .memory import ClaimBatch, MemoryDedupBackend

__all__ = ["DEFAULT_TTLS", "DedupCache", "FailMode"]

FailMode = Literal["closed", "open"]
"""What a claim does when the backend is unreachable: raise (closed) or say FIRST (open)."""

DEFAULT_TTLS: Mapping[str, float] = {"signal": 300.0, "notification": 60.0, "webhook": 30.0}
"""The default TTL (seconds) per message type."""

MAX_KEY_LENGTH = 512
MAX_FINGERPRINT_LENGTH = 256
MAX_BATCH = 10_000

_log = logging.getLogger("fokha_integration.dedup")


_TEN_YEARS = 10 * 365 * 86400.0


def _positive(field: str, value: object, *, config: bool = True) -> float:
    """A duration in seconds: > 0 and at most ten years (ConfigError or ValidationError)."""
    try:
        return _validate.positive(field, value, maximum=_TEN_YEARS)
    except ConfigError as exc:
        if config:
            raise
        raise ValidationError(exc.field, exc.reason, exc.value) from None


def _bad_key(key: object) -> ValidationError:
    return ValidationError("key", f"must be a string of 1..{MAX_KEY_LENGTH} characters", key)


class DedupCache:
    """Atomic claim of keys with a TTL per message type.

    ``backend`` stores the entries (default: a new
    :class:`~fokha_integration.dedup.MemoryDedupBackend` on ``clock``).
    ``ttl_by_type`` maps message types to TTLs in seconds (default ``signal`` 300,
    ``notification`` 60, ``webhook`` 30); other types get ``default_ttl``.
    ``fail_mode`` says what happens when the backend cannot be reached:
    ``"closed"`` (the default) raises
    :class:`~fokha_integration.errors.BackendUnavailableError` so the caller does not
    act; ``"open"`` answers FIRST (``degraded=True``), logs a warning and counts it
    in :attr:`DedupStats.fail_open`. ``max_result_bytes`` bounds what
    :meth:`commit` stores.

    Use one cache per event loop; it is an async context manager that closes the
    backend.
    """

    def __init__(
        self,
        backend: DedupBackend | None = None,
        *,
        ttl_by_type: Mapping[str, float] = DEFAULT_TTLS,
        default_ttl: float = 60.0,
        fail_mode: FailMode = "closed",
        max_result_bytes: int = 64 * 1024,
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
    ) -> None:
        _validate.one_of("fail_mode", fail_mode, ("closed", "open"))
        if not isinstance(ttl_by_type, Mapping):
            raise ConfigError("ttl_by_type", "must be a mapping of type name to seconds", None)
        self._ttls = {
            check_name("ttl_by_type", name, config=True): _positive(f"ttl_by_type[{name!r}]", ttl)
            for name, ttl in ttl_by_type.items()
        }
        self._default_ttl = _positive("default_ttl", default_ttl)
        _validate.integer("max_result_bytes", max_result_bytes, minimum=1, maximum=16 * 1024 * 1024)
        self.fail_mode: FailMode = fail_mode
        self.max_result_bytes = max_result_bytes
        self.backend: DedupBackend = (
            backend if backend is not None else MemoryDedupBackend(clock=clock)
        )
        self._clock = clock
        self._log = logger if logger is not None else _log
        # The memory backend answers synchronously: skip one coroutine per claim.
        self._claim_now = getattr(self.backend, "claim_nowait", None)
        self._claim_many_now = getattr(self.backend, "claim_many_nowait", None)
        self._first = self._duplicates = self._conflicts = self._in_flight = 0
        self._fail_open = self._errors = 0

    # -- configuration ------------------------------------------------------

    def ttl_for(self, type: str) -> float:
        """The TTL in seconds for a message type (``default_ttl`` when not listed)."""
        return self._ttls.get(type, self._default_ttl)

    def _resolve(self, type: str, ttl: float | None) -> float:
        """The TTL for a call: ``ttl`` when given, else the type's; checks the type name."""
        found = self._ttls.get(type)
        if found is None:
            check_name("type", type)
            found = self._default_ttl
        return found if ttl is None else _positive("ttl", ttl, config=False)

    # -- counting and failing -----------------------------------------------

    def _count(self, status: object) -> None:
        if status is FIRST:
            self._first += 1
        elif status is DUPLICATE:
            self._duplicates += 1
        elif status is CONFLICT:
            self._conflicts += 1
        else:
            self._in_flight += 1

    def _unavailable(
        self, exc: BackendUnavailableError, what: str, key: str, count: int = 1
    ) -> None:
        """Fail closed (re-raise) or fail open (warn and count); returns only when open.

        ``count`` is how many answers the failure decides (the keys of a batch).
        """
        self._errors += 1
        if self.fail_mode == "closed":
            raise exc
        self._fail_open += count
        self._log.warning(
            "dedup backend %s unavailable during %s of %r; failing open: %s",
            self.backend.name,
            what,
            key,
            exc,
        )

    def _degraded(self, key: str) -> ClaimResult:
        self._first += 1
        return ClaimResult(FIRST, key, self._clock.time(), None, None, None, True)

    # -- claims -------------------------------------------------------------

    def _checked(
        self,
        key: str,
        type: str,
        fingerprint: str | None,
        lease: float | None,
        ttl: float | None,
    ) -> tuple[float, float | None]:
        """Validate a claim's arguments; the TTL to use and the lease."""
        if key.__class__ is not str or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise _bad_key(key)
        expiry = self._resolve(type, ttl)
        if fingerprint is not None and (
            not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= MAX_FINGERPRINT_LENGTH
        ):
            raise ValidationError("fingerprint", "must be a string of 1..256 characters", None)
        return expiry, None if lease is None else _positive("lease", lease, config=False)

    async def claim(
        self,
        key: str,
        *,
        type: str = "signal",
        fingerprint: str | None = None,
        lease: float | None = None,
        ttl: float | None = None,
    ) -> ClaimResult:
        """Atomically claim ``key`` for its type's TTL; act only when the answer is FIRST.

        ``fingerprint`` (e.g. :func:`content_key` of the payload) lets a repeat of the
        key with different content answer CONFLICT. ``lease`` (seconds) holds the key
        as IN_FLIGHT for that long, until :meth:`commit` stores a result or
        :meth:`release` gives it up; an expired lease frees the key. ``ttl``
        overrides the type's TTL (e.g. for a sliding window).
        """
        # The common case (a plain claim of a valid key of a known type) is checked
        # inline: this is the hot path.
        expiry = self._ttls.get(type)
        if (
            expiry is None
            or ttl is not None
            or lease is not None
            or fingerprint is not None
            or key.__class__ is not str
            or not 0 < len(key) <= MAX_KEY_LENGTH
        ):
            expiry, lease = self._checked(key, type, fingerprint, lease, ttl)
        try:
            if self._claim_now is not None:
                answer: ClaimResult = self._claim_now(type, key, expiry, fingerprint, lease)
            else:
                answer = await self.backend.claim(type, key, expiry, fingerprint, lease)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "claim", key)
            return self._degraded(key)
        status = answer[0]
        if status is FIRST:
            self._first += 1
        elif status is DUPLICATE:
            self._duplicates += 1
        else:
            self._count(status)
        return answer

    def claim_nowait(
        self,
        key: str,
        *,
        type: str = "signal",
        fingerprint: str | None = None,
        lease: float | None = None,
        ttl: float | None = None,
    ) -> ClaimResult:
        """:meth:`claim` without ``await``, for backends that never block (memory).

        For synchronous code (a callback, a thread-free loop). Raises
        :class:`~fokha_integration.errors.ConfigError` (``field="backend"``) when the
        backend has no synchronous claim.
        """
        claim_now = self._claim_now
        if claim_now is None:
            raise ConfigError(
                "backend", "has no synchronous claim; use await claim()", self.backend
            )
        expiry = self._ttls.get(type)
        if (
            expiry is None
            or ttl is not None
            or lease is not None
            or fingerprint is not None
            or key.__class__ is not str
            or not 0 < len(key) <= MAX_KEY_LENGTH
        ):
            expiry, lease = self._checked(key, type, fingerprint, lease, ttl)
        answer: ClaimResult = claim_now(type, key, expiry, fingerprint, lease)
        status = answer[0]
        if status is FIRST:
            self._first += 1
        elif status is DUPLICATE:
            self._duplicates += 1
        else:
            self._count(status)
        return answer

    async def claim_many(
        self, keys: Iterable[str], *, type: str = "signal"
    ) -> Sequence[ClaimResult]:
        """Claim a batch of keys (no fingerprint, no lease) in one backend round trip.

        Results are in the order of ``keys``; a key repeated within the batch is FIRST
        once and DUPLICATE after. At most 10,000 keys per call. The memory backend
        returns a lazy :class:`~fokha_integration.dedup.memory.ClaimBatch` (its
        ``first_keys`` lists the keys won); other backends return a list.
        """
        # A private copy: a memory ClaimBatch reads the keys lazily.
        batch = keys if isinstance(keys, tuple) else list(keys)
        if len(batch) > MAX_BATCH:
            raise ValidationError("keys", f"at most {MAX_BATCH} keys per batch", len(batch))
        # Checked with C-level passes, not a Python loop: this is the batch hot path.
        # (str.join refuses anything that is not a str.)
        if batch:
            try:
                "".join(batch)
                bad = "" in batch or max(map(len, batch)) > MAX_KEY_LENGTH
            except TypeError:
                bad = True
            if bad:
                raise _bad_key(
                    next(
                        k
                        for k in batch
                        if k.__class__ is not str or not k or len(k) > MAX_KEY_LENGTH
                    )
                )
        expiry = self._ttls.get(type)
        if expiry is None:
            expiry = self._resolve(type, None)
        try:
            if self._claim_many_now is not None:
                answers: Sequence[ClaimResult] = self._claim_many_now(type, batch, expiry)
            else:
                answers = await self.backend.claim_many(type, batch, expiry)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "claim_many", f"{len(batch)} keys", len(batch))
            return [self._degraded(k) for k in batch]
        if isinstance(answers, ClaimBatch):
            first = answers.first
            self._in_flight += answers.in_flight
            self._duplicates += len(answers) - first - answers.in_flight
        else:
            first = 0
            for answer in answers:
                if answer[0] is FIRST:
                    first += 1
                else:
                    self._count(answer[0])
        self._first += first
        return answers

    # -- look, commit, release ---------------------------------------------

    def _check(self, key: str, type: str, token: str | None = None) -> None:
        if key.__class__ is not str or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise _bad_key(key)
        check_name("type", type)
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 64):
            raise ValidationError("token", "must be the token of a claim (1..64 characters)", None)

    async def peek(self, key: str, *, type: str = "signal") -> ClaimResult | None:
        """The live entry of ``key`` (DUPLICATE or IN_FLIGHT, with its result), or ``None``.

        Claims nothing. Fail mode applies: open answers ``None``.
        """
        self._check(key, type)
        try:
            return await self.backend.peek(type, key)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "peek", key)
            return None

    async def seen(self, key: str, *, type: str = "signal") -> bool:
        """Whether ``key`` is currently held (check only; claims nothing)."""
        return await self.peek(key, type=type) is not None

    async def commit(
        self,
        key: str,
        result: bytes | str = b"",
        *,
        type: str = "signal",
        token: str | None = None,
        ttl: float | None = None,
    ) -> bool:
        """Store a small ``result`` for ``key`` and keep the key for the type's TTL from now.

        A later claim of the key answers DUPLICATE with this result, as an idempotent
        endpoint replays its response. Pass the ``token`` of your leased claim: when
        your lease already ran out and another holder has the key, nothing is
        stored and the answer is ``False``. When the entry is gone (expired), it is
        created, so the work you did is still remembered. ``str`` results are stored
        as UTF-8; at most ``max_result_bytes``. ``ttl`` overrides the type's TTL.
        Fail open: ``False`` with a warning.
        """
        self._check(key, type, token)
        data = result.encode("utf-8") if isinstance(result, str) else result
        if not isinstance(data, bytes):
            raise ValidationError("result", "must be bytes or str", result.__class__.__name__)
        if len(data) > self.max_result_bytes:
            raise ValidationError(
                "result", f"must be at most {self.max_result_bytes} bytes", len(data)
            )
        try:
            return await self.backend.commit(type, key, data, self._resolve(type, ttl), token)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "commit", key)
            return False

    async def release(self, key: str, *, type: str = "signal", token: str | None = None) -> bool:
        """Give up a claim that was not committed, so the next claim is FIRST.

        With ``token`` only your own claim is released. A committed key is kept (use
        :meth:`forget`). Fail open: ``False`` with a warning.
        """
        self._check(key, type, token)
        try:
            return await self.backend.release(type, key, token)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "release", key)
            return False

    async def forget(self, key: str, *, type: str = "signal") -> bool:
        """Drop ``key`` whatever its state; whether a live entry was dropped."""
        self._check(key, type)
        try:
            return await self.backend.forget(type, key)
        except BackendUnavailableError as exc:
            self._unavailable(exc, "forget", key)
            return False

    async def clear(self, type: str | None = None) -> int:
        """Drop every entry of ``type`` (all types when ``None``); always fails closed."""
        if type is not None:
            check_name("type", type)
        return await self.backend.clear(type)

    # -- stats and lifetime ---------------------------------------------------

    def stats(self) -> DedupStats:
        """A snapshot of the counters."""
        return DedupStats(
            first=self._first,
            duplicates=self._duplicates,
            conflicts=self._conflicts,
            in_flight=self._in_flight,
            evictions=self.backend.evictions,
            fail_open=self._fail_open,
            errors=self._errors,
        )

    async def close(self) -> None:
        """Close the backend (connections, threads, background sweeps)."""
        await self.backend.close()

    async def aclose(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warn_aclose(self)
        await self.close()

    async def __aenter__(self) -> DedupCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"DedupCache(backend={self.backend!r}, fail_mode={self.fail_mode!r})"
