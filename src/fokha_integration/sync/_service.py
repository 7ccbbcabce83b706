"""SyncService: the server side of protocol v1 over any :class:`SyncStore`.

It turns bodies into store transactions and answers into wire bytes. The HTTP
mapping (status codes, problem+json) lives in :meth:`SyncService.handle`, which
takes and returns bytes, so the aiohttp sub-application and in-process tests
share one code path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _validate
from ..errors import (
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    ProtocolError,
    ValidationError,
)
from ._core import Limits, MutationGapError, changes_checksum, parse_pull, parse_push, plan_push
from ._hlc import HybridClock
from ._store import RawPage, SyncStore, dumps
from ._types import Collection, ConflictEntry, MutationResult, Record, StoreStatus

__all__ = ["SyncConfig", "SyncMetrics", "SyncService", "SyncStats"]

_log = logging.getLogger("fokha_integration.sync")
_BOOL = {True: "true", False: "false"}

Listener = Callable[[Sequence[str]], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Server knobs: clock guard, tombstone horizon, request limits."""

    node_id: str | None = None
    """The server's HLC node id; default ``s-`` + random hex, new per process, so two
    server processes on one database never mint the same version."""
    max_offset: float = 60.0
    horizon: float = 30 * 86400.0
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = 8 * 1024 * 1024
    max_response_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.node_id is not None:
            _validate.string("node_id", self.node_id, max_length=64)
        _validate.number("max_offset", self.max_offset, exclusive_minimum=0.0)
        _validate.number("horizon", self.horizon, exclusive_minimum=0.0)
        _validate.integer("max_body_bytes", self.max_body_bytes, minimum=1024)
        _validate.integer("max_response_bytes", self.max_response_bytes, minimum=1024)
        if not isinstance(self.limits, Limits):  # Limits checks its own numbers
            raise ConfigError("limits", "must be a sync.Limits", self.limits)


@dataclass(frozen=True, slots=True)
class SyncStats:
    """Counters since start (a snapshot)."""

    pushes: int
    pulls: int
    applied: int
    duplicates: int
    conflicts: int
    rejected: int
    gaps: int
    resets: int
    refused_skew: int
    bad_requests: int
    compacted: int


@dataclass(frozen=True, slots=True)
class SyncMetrics:
    """What to graph: per-client lag (``high_seq - ack_seq``), store counts, counters."""

    lag: dict[str, int]
    records: int
    tombstones: int
    unresolved_conflicts: int
    stats: SyncStats


@dataclass(slots=True)
class _Counters:
    pushes: int = 0
    pulls: int = 0
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    gaps: int = 0
    resets: int = 0
    bad_requests: int = 0
    compacted: int = 0


def problem(status: int, code: str, detail: str, **extra: Any) -> tuple[int, bytes]:
    """A problem+json body (RFC 9457) with ``code`` and any ``extra`` members."""
    body = {
        "type": f"urn:fokha:sync:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return status, dumps(body).encode()


class SyncService:
    """Serves pull and push for ``collections`` from ``store`` (see docs/sync.md)."""

    def __init__(
        self,
        store: SyncStore,
        collections: Sequence[Collection | str],
        *,
        config: SyncConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or SyncConfig()
        cols = [c if isinstance(c, Collection) else Collection(c) for c in collections]
        if not cols:
            raise ValidationError("collections", "at least one collection is required", cols)
        for c in cols:
            _validate.string("collections.name", c.name, max_length=64)
        self._collections: Mapping[str, Collection] = {c.name: c for c in cols}
        self._wall = wall
        self._clock: HybridClock | None = None
        self._lock = asyncio.Lock()
        self._n = _Counters()
        self._listeners: list[Listener] = []
        self._closed = False

    @property
    def collections(self) -> tuple[str, ...]:
        """The collection names served."""
        return tuple(self._collections)

    @property
    def clock(self) -> HybridClock:
        """The server's HLC (after :meth:`start`)."""
        if self._clock is None:
            raise ClosedError("the sync service is not started")
        return self._clock

    async def start(self) -> None:
        """Open the store and restore the clock from its last persisted value."""
        await self.store.open()
        self._clock = HybridClock(
            self.config.node_id or f"s-{secrets.token_hex(4)}",
            max_offset=self.config.max_offset,
            wall=self._wall,
            last=await self.store.load_clock(),
        )

    async def close(self) -> None:
        """Close the store; idempotent."""
        if not self._closed:
            self._closed = True
            await self.store.close()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(collections)`` after every commit that changed records (pokes)."""
        self._listeners.append(listener)

    async def _notify(self, collections: Sequence[str]) -> None:
        for listener in self._listeners:
            try:
                result = listener(collections)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a poke is a hint; its failure must not fail the push
                _log.exception("sync listener failed")

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    async def push(self, body: Any) -> tuple[list[MutationResult], int]:
        """Apply a decoded push body; ``(results, last_mutation_id)``.

        Raises :class:`ValidationError` (nothing applied), :class:`MutationGapError`
        (nothing applied) or :class:`BackendUnavailableError` (nothing applied; retry).
        """
        client_id, mutations = parse_push(body, self._collections, self.config.limits)
        clock = self.clock
        now_ms = self._now_ms()

        def planner(last: int, current: Mapping[tuple[str, str], Record]) -> Any:
            return plan_push(client_id, last, mutations, current, self._collections, clock, now_ms)

        keys = [(m.collection, m.id) for m in mutations]
        async with self._lock:
            plan = await self.store.push(client_id, keys, planner)
        n = self._n
        n.pushes += 1
        for r in plan.results:
            if r.status == "applied":
                n.applied += 1
            elif r.status == "duplicate":
                n.duplicates += 1
            elif r.status == "conflict":
                n.conflicts += 1
            else:
                n.rejected += 1
        if plan.writes:
            await self._notify(sorted({w.collection for w in plan.writes}))
        return plan.results, plan.last_mutation_id

    async def pull_page(self, body: Any) -> RawPage:
        """Read one page for a decoded pull body (recording the client's ack)."""
        req = parse_pull(body, self._collections, self.config.limits)
        page = await self.store.pull(
            req.client_id, req.collections, req.cursor, req.limit, self._now_ms(), req.ack
        )
        page = page.truncated(self.config.max_response_bytes)
        self._n.pulls += 1
        if page.reset:
            self._n.resets += 1
        return page

    @staticmethod
    def encode_page(page: RawPage) -> bytes:
        """The pull response body, built without re-encoding stored record data."""
        parts = []
        for c in page.changes:
            data = "null" if c.data_json is None else c.data_json
            parts.append(
                f'{{"collection":{_json_str(c.collection)},"id":{_json_str(c.id)},'
                f'"data":{data},"version":"{c.version}","deleted":{_BOOL[c.deleted]}}}'
            )
        checksum = changes_checksum(
            (c.collection, c.id, c.version, c.deleted) for c in page.changes
        )
        head = (
            f'{{"cursor":"{page.cursor.encode()}","has_more":{_BOOL[page.has_more]},'
            f'"last_mutation_id":{page.last_mutation_id},'
            f'"reset_required":{_BOOL[page.reset]},'
            f'"checksum":"{checksum}","changes":['
        )
        return (head + ",".join(parts) + "]}").encode()

    async def handle(
        self, route: str, body: bytes, allow: Callable[[str], bool] | None = None
    ) -> tuple[int, bytes]:
        """One request: ``route`` is ``"pull"`` or ``"push"``; ``(status, json bytes)``.

        Every refusal is problem+json naming the offending ``field``; nothing of a
        refused push is applied. ``allow(client_id)`` (the auth hook) may refuse
        the request's client id with 403.
        """
        if len(body) > self.config.max_body_bytes:
            self._n.bad_requests += 1
            return problem(413, "body_too_large", f"at most {self.config.max_body_bytes} bytes")
        try:
            decoded = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            self._n.bad_requests += 1
            return problem(400, "bad_json", f"the body is not JSON: {exc}", field="body")
        if allow is not None and isinstance(decoded, dict):
            client_id = decoded.get("client_id")
            if isinstance(client_id, str) and not allow(client_id):
                return problem(
                    403, "forbidden", "this token may not act as this client_id", field="client_id"
                )
        try:
            if route == "pull":
                return 200, self.encode_page(await self.pull_page(decoded))
            if route == "push":
                results, last = await self.push(decoded)
                out = {"results": [r.to_wire() for r in results], "last_mutation_id": last}
                return 200, dumps(out).encode()
            return problem(404, "not_found", f"no route {route!r}")
        except MutationGapError as exc:
            self._n.gaps += 1
            return problem(
                409,
                "mutation_gap",
                exc.detail,
                field=f"mutations[{exc.index}].mutation_id",
                expected=exc.expected,
            )
        except ValidationError as exc:
            self._n.bad_requests += 1
            return problem(400, "invalid", exc.reason, field=exc.field)
        except BackendUnavailableError as exc:
            return problem(503, "unavailable", str(exc), retry_after=1)
        except ProtocolError as exc:
            self._n.bad_requests += 1
            return problem(400, exc.code, exc.detail)

    # --- server-side API -------------------------------------------------------

    def _check_collection(self, collection: str) -> None:
        if collection not in self._collections:
            raise ValidationError("collection", "unknown collection", collection)

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> Record:
        """Write a record as the server (a new version, pushed to clients on their next pull)."""
        self._check_collection(collection)
        if not isinstance(data, dict):
            raise ValidationError("data", "must be a dict", data)
        async with self._lock:
            rec = Record(collection, id, data, self.clock.now().encode())
            await self.store.write([rec], self.clock.last.encode())
        await self._notify([collection])
        return rec

    async def delete(self, collection: str, id: str) -> Record:
        """Delete a record as the server (a tombstone)."""
        self._check_collection(collection)
        async with self._lock:
            rec = Record(collection, id, None, self.clock.now().encode(), True)
            await self.store.write([rec], self.clock.last.encode())
        await self._notify([collection])
        return rec

    async def get(self, collection: str, id: str) -> Record | None:
        """The server's record (``None`` if absent; tombstones are returned)."""
        return await self.store.get(collection, id)

    async def conflicts(
        self, *, collection: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[ConflictEntry]:
        """The conflict log (unresolved entries by default)."""
        return await self.store.conflicts(
            collection=collection, include_resolved=include_resolved, limit=limit
        )

    async def resolve(
        self, conflict_id: int, choice: str | dict[str, Any], *, force: bool = False
    ) -> Record:
        """Settle a logged conflict: ``"server"``, ``"client"``, ``"result"`` or new data.

        Writes the chosen data as a new version (so every replica gets it) and marks
        the entry resolved, in one transaction. An entry already resolved, or a record
        written again since the conflict was logged, is refused with a
        :class:`ValidationError` on ``conflict_id`` (the choice would overwrite a
        later edit) unless ``force=True``.
        """
        entry = await self.store.get_conflict(conflict_id)
        if entry is None:
            raise ValidationError("conflict_id", "no such conflict", conflict_id)
        if not force:
            if entry.resolved:
                raise ValidationError("conflict_id", "already resolved", conflict_id)
            current = await self.store.get(entry.collection, entry.id)
            if current is not None and current.version != entry.result.version:
                raise ValidationError(
                    "conflict_id", "the record changed since; look again (or force)", conflict_id
                )
        if isinstance(choice, dict):
            data: dict[str, Any] | None = choice
        elif choice == "server":
            data = None if entry.server is None else entry.server.data
        elif choice == "client":
            data = entry.client.data
        elif choice == "result":
            data = entry.result.data
        else:
            raise ValidationError("choice", "must be server, client, result or a dict", choice)
        async with self._lock:
            rec = Record(entry.collection, entry.id, data, self.clock.now().encode(), data is None)
            await self.store.write([rec], self.clock.last.encode(), resolved=conflict_id)
        await self._notify([entry.collection])
        return rec

    async def compact(self) -> int:
        """Drop tombstones every live client has seen (silent for ``horizon``: gone)."""
        removed = await self.store.compact(self._now_ms() - int(self.config.horizon * 1000))
        self._n.compacted += removed
        return removed

    async def status(self) -> StoreStatus:
        """Store counts and per-client state (lag = ``high_seq - ack_seq``)."""
        return await self.store.status()

    async def metrics(self) -> SyncMetrics:
        """Per-client lag, store counts and the counters (reads the store)."""
        s = await self.store.status()
        return SyncMetrics(
            lag={c.client_id: s.high_seq - c.ack_seq for c in s.clients},
            records=s.records,
            tombstones=s.tombstones,
            unresolved_conflicts=s.unresolved_conflicts,
            stats=self.stats(),
        )

    def stats(self) -> SyncStats:
        """Counters since start."""
        n = self._n
        return SyncStats(
            pushes=n.pushes,
            pulls=n.pulls,
            applied=n.applied,
            duplicates=n.duplicates,
            conflicts=n.conflicts,
            rejected=n.rejected,
            gaps=n.gaps,
            resets=n.resets,
            refused_skew=0 if self._clock is None else self._clock.refused,
            bad_requests=n.bad_requests,
            compacted=n.compacted,
        )


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\uffff]*')


def _json_str(text: str) -> str:
    """A JSON string literal; plain ASCII (the usual ids) skips the encoder."""
    return f'"{text}"' if _PLAIN.fullmatch(text) else json.dumps(text)


def _refuse_constant(name: str) -> Any:
    # A ValidationError is a ValueError: json.loads' caller handles it as bad JSON.
    raise ValidationError("body", f"{name} is not allowed", name)
