"""The in-process dedup backend (the default): a dict per type, bounded, monotonic time.

Good for one process (every coroutine of it): claims are plain dictionary work with
no ``await`` inside, so on one event loop each claim is atomic. It is not shared
between processes and is lost on restart: use the SQLite backend (one host) or the
Redis backend (many hosts) for that. Not thread-safe: use it from one event loop.

**Time.** Expiry runs on the injected clock's monotonic time, shifted to read as
wall-clock time at construction (so ``first_seen``/``expires_at`` look like Unix
times). A wall-clock step never expires entries early or late; the reported times
drift from the wall clock by however much it is stepped while the backend lives.

**Size bound and eviction policy.** Each message type holds at most
``max_entries`` entries. When a new key finds its type full: if at least
``max_entries // 4`` keys have arrived at the full bound since the last sweep,
every expired entry of the type is swept first (free, not counted). If the type
is still full, the oldest ``max(1, max_entries // 64)`` entries (oldest by the
claim or commit that last wrote them) are dropped in one go; live ones among them are counted in
:attr:`MemoryDedupBackend.evictions`. Evicting in small groups keeps the cost O(1)
per claim on average. An evicted key is forgotten early, so a repeat of it would be
FIRST: size the bound well above the number of keys one TTL can hold, and watch
the counter.

**Why it looks the way it does.** Claims are on the hot path, so an entry *is* the
:class:`ClaimResult` of the claim that made it (a FIRST claim allocates one object
and returns it), a batch claim shares one entry among all the keys it wins and
returns a lazy :class:`ClaimBatch`, and the dict's own insertion order is the
eviction order (a key re-written moves to the end).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast, overload

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock, SystemClock
from ._backend import CONFLICT, DUPLICATE, FIRST, IN_FLIGHT, ClaimResult, ClaimStatus, warn_aclose

__all__ = ["ClaimBatch", "MemoryDedupBackend"]

# An entry is a ClaimResult with status FIRST: (status, key, first_seen, result,
# expires_at, token, degraded). A batch's shared entry has key None. An entry is in
# flight (leased, not committed) when it has a token and no result.
_KEY, _FIRST, _RESULT, _EXP, _TOKEN = 1, 2, 3, 4, 5

# Entries are typed loosely: their fields are always set (expires_at is a float), which
# the public ClaimResult type (where expires_at may be None) cannot say.
_Entry = Any

_new = cast(Callable[[type[ClaimResult], tuple[Any, ...]], ClaimResult], tuple.__new__)


def _status(entry: _Entry) -> ClaimStatus:
    return IN_FLIGHT if entry[_TOKEN] is not None and entry[_RESULT] is None else DUPLICATE


class ClaimBatch(Sequence[ClaimResult]):
    """The results of a memory ``claim_many``: a sequence of :class:`ClaimResult`, built lazily.

    ``first`` is how many keys were FIRST (``first_keys`` which, in order),
    ``in_flight`` how many were IN_FLIGHT; the rest were DUPLICATE.
    """

    __slots__ = ("_entries", "_fresh", "_keys", "first", "in_flight")

    def __init__(
        self,
        keys: Sequence[str],
        entries: list[_Entry],
        fresh: _Entry,
        first: int,
        in_flight: int,
    ) -> None:
        self._keys = keys
        self._entries = entries
        self._fresh = fresh
        self.first = first
        self.in_flight = in_flight

    @property
    def first_keys(self) -> list[str]:
        """The keys that were FIRST, in order."""
        fresh = self._fresh
        return [k for k, e in zip(self._keys, self._entries, strict=True) if e is fresh]

    def __len__(self) -> int:
        return len(self._entries)

    def _result(self, i: int) -> ClaimResult:
        entry = self._entries[i]
        status = FIRST if entry is self._fresh else _status(entry)
        return _new(
            ClaimResult,
            (status, self._keys[i], entry[_FIRST], entry[_RESULT], entry[_EXP], None, False),
        )

    @overload
    def __getitem__(self, index: int) -> ClaimResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[ClaimResult]: ...
    def __getitem__(self, index: int | slice) -> ClaimResult | list[ClaimResult]:
        if isinstance(index, slice):
            return [self._result(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("ClaimBatch index out of range")
        return self._result(index)

    def __iter__(self) -> Iterator[ClaimResult]:
        for i in range(len(self._entries)):
            yield self._result(i)

    def statuses(self) -> list[ClaimStatus]:
        """The status of each key, in order."""
        fresh = self._fresh
        return [FIRST if e is fresh else _status(e) for e in self._entries]

    def __repr__(self) -> str:
        return f"ClaimBatch(keys={len(self)}, first={self.first})"


class MemoryDedupBackend:
    """Dedup entries in this process's memory; see the module docstring for the policy.

    ``max_entries`` bounds the entries per message type (default 100,000);
    ``clock`` gives the monotonic time that measures TTLs and leases.
    """

    name = "memory"

    def __init__(self, *, max_entries: int = 100_000, clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_entries = _validate.integer("max_entries", max_entries, minimum=1)
        self._maps: dict[str, dict[str, _Entry]] = {}
        # Fingerprints, only for keys claimed with one: key -> (entry, fingerprint).
        # The entry identity tells a current record from one left by a replaced entry.
        self._fps: dict[str, dict[str, tuple[_Entry, str]]] = {}
        self._evictions = 0
        self._since_sweep: dict[str, int] = {}
        self._mono: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._offset = clock.time() - clock.monotonic()

    # -- introspection ------------------------------------------------------

    @property
    def evictions(self) -> int:
        """Live entries evicted to respect ``max_entries``."""
        return self._evictions

    def __len__(self) -> int:
        """Entries held (all types), including expired ones not dropped yet."""
        return sum(len(m) for m in self._maps.values())

    def now(self) -> float:
        """The backend's current time (monotonic, wall-aligned; see the module docstring)."""
        return self._mono() + self._offset

    # -- the hot path -------------------------------------------------------

    def claim_nowait(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Claim ``key`` synchronously (see :class:`~fokha_integration.dedup.DedupBackend`)."""
        m = self._maps.get(type)
        if m is None:
            m = self._maps[type] = {}
        now = self._mono() + self._offset
        entry = m.get(key)
        if entry is not None:
            if entry[4] > now:
                if fingerprint is not None and self._conflicts(type, key, entry, fingerprint):
                    status = CONFLICT
                elif entry[5] is not None and entry[3] is None:
                    status = IN_FLIGHT
                else:
                    status = DUPLICATE
                return _new(ClaimResult, (status, key, entry[2], entry[3], entry[4], None, False))
            del m[key]
        if len(m) >= self.max_entries:
            self._make_room(type, m, now)
        if lease is None:
            m[key] = entry = _new(ClaimResult, (FIRST, key, now, None, now + ttl, None, False))
        else:
            token = secrets.token_hex(8)
            m[key] = entry = _new(ClaimResult, (FIRST, key, now, None, now + lease, token, False))
        if fingerprint is not None:
            self._fps.setdefault(type, {})[key] = (entry, fingerprint)
        return entry

    def _conflicts(self, type: str, key: str, entry: _Entry, fingerprint: str) -> bool:
        record = self._fps.get(type, {}).get(key)
        return record is not None and record[0] is entry and record[1] != fingerprint

    def claim_many_nowait(self, type: str, keys: Sequence[str], ttl: float) -> ClaimBatch:
        """Claim each key synchronously; results in the order of ``keys``."""
        m = self._maps.get(type)
        if m is None:
            m = self._maps[type] = {}
        now = self._mono() + self._offset
        fresh = _new(ClaimResult, (FIRST, None, now, None, now + ttl, None, False))
        # A repeat of a key inside the batch must not look like the batch's own entry.
        repeat = _new(ClaimResult, (DUPLICATE, None, now, None, now + ttl, None, False))
        entries: list[_Entry] = []
        add, get = entries.append, m.get
        first = in_flight = 0
        if len(m) + len(keys) <= self.max_entries:
            # Room for every key: the loop needs no bound check.
            for key in keys:
                entry = get(key)
                if entry is not None:
                    if entry[4] > now:
                        if entry is fresh:
                            add(repeat)
                        else:
                            add(entry)
                            if entry[5] is not None and entry[3] is None:
                                in_flight += 1
                        continue
                    del m[key]  # re-inserted below, at the end of the eviction order
                m[key] = fresh
                add(fresh)
                first += 1
            return ClaimBatch(keys, entries, fresh, first, in_flight)
        for key in keys:
            entry = get(key)
            if entry is not None:
                if entry[4] > now:
                    if entry is fresh:
                        add(repeat)
                    else:
                        add(entry)
                        if entry[5] is not None and entry[3] is None:
                            in_flight += 1
                    continue
                del m[key]
            if len(m) >= self.max_entries:
                self._make_room(type, m, now)
            m[key] = fresh
            add(fresh)
            first += 1
        return ClaimBatch(keys, entries, fresh, first, in_flight)

    # -- bound keeping ------------------------------------------------------

    def _make_room(self, type: str, m: dict[str, _Entry], now: float) -> None:
        since = self._since_sweep.get(type, 0)
        if since >= max(1, self.max_entries // 4):
            self._since_sweep[type] = 0
            self._sweep_map(type, m, now)
            if len(m) < self.max_entries:
                return
        self._since_sweep[type] = since + 1
        fps = self._fps.get(type)
        count = max(1, self.max_entries // 64, len(m) - self.max_entries + 1)
        for key in list(itertools.islice(m, count)):
            entry = m.pop(key)
            if entry[_EXP] > now:
                self._evictions += 1
            if fps is not None:
                fps.pop(key, None)

    def _sweep_map(self, type: str, m: dict[str, _Entry], now: float) -> int:
        dead = [k for k, e in m.items() if e[_EXP] <= now]
        for k in dead:
            del m[k]
        fps = self._fps.get(type)
        if fps:
            stale = [k for k, (e, _) in fps.items() if m.get(k) is not e]
            for k in stale:
                del fps[k]
        return len(dead)

    def sweep(self) -> int:
        """Drop every expired entry now; how many were dropped (not counted as evictions)."""
        now = self.now()
        return sum(self._sweep_map(t, m, now) for t, m in self._maps.items())

    # -- the rest of the protocol ------------------------------------------

    def _live(self, type: str, key: str) -> _Entry | None:
        m = self._maps.get(type)
        entry = None if m is None else m.get(key)
        if entry is None or entry[_EXP] <= self.now():
            return None
        return entry

    async def claim(
        self, type: str, key: str, ttl: float, fingerprint: str | None, lease: float | None
    ) -> ClaimResult:
        """Claim ``key`` (the same as :meth:`claim_nowait`)."""
        return self.claim_nowait(type, key, ttl, fingerprint, lease)

    async def claim_many(self, type: str, keys: Sequence[str], ttl: float) -> ClaimBatch:
        """Claim each key (the same as :meth:`claim_many_nowait`)."""
        return self.claim_many_nowait(type, keys, ttl)

    async def peek(self, type: str, key: str) -> ClaimResult | None:
        """The live entry as a DUPLICATE or IN_FLIGHT result, or ``None``."""
        e = self._live(type, key)
        if e is None:
            return None
        return ClaimResult(_status(e), key, e[_FIRST], e[_RESULT], e[_EXP])

    async def commit(
        self, type: str, key: str, result: bytes, ttl: float, token: str | None
    ) -> bool:
        """Store ``result`` and keep the entry ``ttl`` s from now (see the protocol)."""
        m = self._maps.get(type)
        if m is None:
            m = self._maps[type] = {}
        now = self.now()
        old = m.get(key)
        fp_record = None
        if old is not None and old[_EXP] > now:
            if token is not None and old[_TOKEN] != token:
                return False
            first, tok = old[_FIRST], old[_TOKEN]
            fp_record = self._fps.get(type, {}).get(key)
        else:
            first, tok = now, token
        if old is not None:
            del m[key]  # re-insert at the end: the eviction order is the write order
        if len(m) >= self.max_entries:
            self._make_room(type, m, now)
        m[key] = entry = ClaimResult(FIRST, key, first, result, now + ttl, tok)
        if fp_record is not None and fp_record[0] is old:
            self._fps[type][key] = (entry, fp_record[1])
        return True

    async def release(self, type: str, key: str, token: str | None) -> bool:
        """Drop a live, not committed entry (``token``, when given, must match)."""
        entry = self._live(type, key)
        if entry is None or entry[_RESULT] is not None:
            return False
        if token is not None and entry[_TOKEN] != token:
            return False
        del self._maps[type][key]
        return True

    async def forget(self, type: str, key: str) -> bool:
        """Drop the entry whatever its state; whether a live one was dropped."""
        m = self._maps.get(type)
        entry = None if m is None else m.pop(key, None)
        self._fps.get(type, {}).pop(key, None)
        return entry is not None and entry[_EXP] > self.now()

    async def clear(self, type: str | None) -> int:
        """Drop every entry of ``type`` (or all); how many were dropped."""
        if type is None:
            dropped = len(self)
            self._maps.clear()
            self._fps.clear()
            return dropped
        self._fps.pop(type, None)
        return len(self._maps.pop(type, {}))

    async def close(self) -> None:
        """Nothing to release; entries stay readable."""

    async def aclose(self) -> None:
        """Deprecated alias of :meth:`close`."""
        warn_aclose(self)
        await self.close()

    def __repr__(self) -> str:
        return f"MemoryDedupBackend(entries={len(self)}, max_entries={self.max_entries})"
