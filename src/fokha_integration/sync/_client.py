"""SyncClient: a local SQLite replica of some collections, kept in step with a sync server.

Local writes go to the replica's outbox at once (``put``/``delete``); ``sync()``
pushes the outbox (exactly once, by mutation id) and pulls changes after the
stored cursor. A download never overwrites a pending local write: the app sees
the downloaded record with the pending writes on top, until a complete pull
shows the server has applied them. A mutation the server can never accept goes
to a dead-letter table with the reason and never blocks the ones behind it. The
background loop (:meth:`SyncClient.start`) syncs on every poke and on an
interval, backs off on failure and always re-arms.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import _validate
from .._aio import cancel_and_wait
from ..errors import (
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    OperationTimeoutError,
    ProtocolError,
    ValidationError,
)
from ._core import Limits, changes_checksum
from ._hlc import ClockSkewError, HybridClock, parse_version
from ._replica import OutboxEntry, Replica
from ._store import dumps
from ._transport import HttpTransport, Transport
from ._types import Record

__all__ = ["SyncClient", "SyncClientConfig", "SyncClientStats"]

T = TypeVar("T")
_log = logging.getLogger("fokha_integration.sync.client")
_POISON_FIELD = re.compile(r"mutations\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class SyncClientConfig:
    """Client knobs: batch sizes, loop interval, backoff, clock guard."""

    push_batch: int = 500
    pull_limit: int = 1000
    interval: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_offset: float = 60.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        _validate.integer("push_batch", self.push_batch, minimum=1, maximum=1000)
        _validate.integer("pull_limit", self.pull_limit, minimum=1, maximum=5000)
        _validate.number("interval", self.interval, exclusive_minimum=0.0)
        _validate.number("backoff_base", self.backoff_base, exclusive_minimum=0.0)
        _validate.number("backoff_max", self.backoff_max, exclusive_minimum=0.0)
        _validate.number("max_offset", self.max_offset, exclusive_minimum=0.0)
        if not isinstance(self.limits, Limits):  # Limits checks its own numbers
            raise ConfigError("limits", "must be a sync.Limits", self.limits)


@dataclass(frozen=True, slots=True)
class SyncClientStats:
    """A snapshot of the client's counters and queues."""

    pending: int
    dead_letters: int
    pushes: int
    pulls: int
    resets: int
    failures: int
    resent_batches: int
    duplicates: int
    refused_skew: int
    last_error: str | None


def _push_body(client_id: str, batch: Sequence[OutboxEntry]) -> bytes:
    """The push body, with each outbox entry's stored data text spliced in (not re-encoded)."""
    items = []
    for mid, coll, rid, op, data, version, base in batch:
        tail = "" if base is None else f',"base_version":{json.dumps(base)}'
        items.append(
            f'{{"mutation_id":{mid},"collection":{json.dumps(coll)},"id":{json.dumps(rid)},'
            f'"op":"{op}","data":{data or "null"},"version":{json.dumps(version)}{tail}}}'
        )
    return f'{{"client_id":{json.dumps(client_id)},"mutations":[{",".join(items)}]}}'.encode()


class SyncClient:
    """A replica of ``collections`` in the SQLite file ``path``, synced with ``server``.

    ``server`` is the base URL of the mounted :func:`sync_app` (``http://host/sync``)
    or a :class:`Transport`. The client id is generated on first use and kept in
    the file (pass ``client_id`` to choose it, e.g. ``"alice/phone"``).
    """

    def __init__(
        self,
        path: str | Path,
        server: str | Transport,
        collections: Sequence[str],
        *,
        client_id: str | None = None,
        token: str | Callable[[], str] | None = None,
        config: SyncClientConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not collections:
            raise ValidationError("collections", "at least one collection", collections)
        self.collections = tuple(collections)
        self.config = config or SyncClientConfig()
        self._transport: Transport = (
            HttpTransport(server, token=token) if isinstance(server, str) else server
        )
        self._wall = wall
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fokha-sync-client")
        self._db = Replica(path)
        chosen = client_id or f"c-{secrets.token_hex(8)}"
        self.client_id = self._db.init_meta(
            "client_id", _validate.string("client_id", chosen, max_length=128)
        )
        # The node id must be unique per client: a readable part plus a hash of the id.
        digest = hashlib.sha256(self.client_id.encode()).hexdigest()[:8]
        node = re.sub(r"[^A-Za-z0-9_.:-]", ".", self.client_id)[:55] + "." + digest
        self._clock = HybridClock(
            node, max_offset=self.config.max_offset, wall=wall, last=self._db.meta("clock")
        )
        self._lock = asyncio.Lock()
        self._poked = asyncio.Event()
        self._attempted = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._n: dict[str, int] = dict.fromkeys(
            ("pushes", "pulls", "resets", "failures", "resent", "duplicates"), 0
        )
        self._last_error: str | None = None
        self._inflight: int = 0  # highest mutation id sent but not yet answered
        self._batch = self.config.push_batch

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ClosedError("the sync client is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _check(self, collection: str, id: str) -> None:
        if collection not in self.collections:
            raise ValidationError("collection", "not a collection of this client", collection)
        _validate.string("id", id, max_length=256)

    # --- local API -------------------------------------------------------------

    async def put(self, collection: str, id: str, data: dict[str, Any]) -> Record:
        """Write a record locally (queued for the server); the new local record."""
        self._check(collection, id)
        if not isinstance(data, dict):
            raise ValidationError("data", "must be a dict", data)
        try:
            text = dumps(data)
        except (TypeError, ValueError) as exc:
            raise ValidationError("data", f"not JSON: {exc}", None) from None
        if len(text.encode()) > self.config.limits.max_record_bytes:
            raise ValidationError("data", "too large", len(text))
        version = self._clock.now().encode()
        await self._run(self._db.enqueue, collection, id, "put", text, version, version)
        return Record(collection, id, json.loads(text), version)

    async def delete(self, collection: str, id: str) -> Record:
        """Delete a record locally (queued for the server)."""
        self._check(collection, id)
        version = self._clock.now().encode()
        await self._run(self._db.enqueue, collection, id, "delete", None, version, version)
        return Record(collection, id, None, version, True)

    async def get(self, collection: str, id: str) -> dict[str, Any] | None:
        """The record's data as the app sees it (pending writes on top), or ``None``."""
        found = await self._run(self._db.get, collection, id)
        if found is None or found[0] is None:
            return None
        return json.loads(found[0])  # type: ignore[no-any-return]

    async def query(self, collection: str) -> dict[str, dict[str, Any]]:
        """Every live record of ``collection`` by id, as the app sees it."""
        rows = await self._run(self._db.query, collection)
        return {rid: json.loads(data) for rid, (data, _) in rows.items() if data is not None}

    async def versions(self, collection: str) -> dict[str, str]:
        """The version of every live record of ``collection`` as the app sees it."""
        rows = await self._run(self._db.query, collection)
        return {rid: version for rid, (data, version) in rows.items() if data is not None}

    async def outbox_head(self) -> int:
        """The id of the last local mutation ever queued (0 if none)."""
        return int(await self._run(self._db.meta, "next_mutation_id") or 1) - 1

    async def dead_letters(self) -> list[dict[str, Any]]:
        """Mutations the server refused for good, with the reason."""
        return await self._run(self._db.dead_letters)

    # --- sync ------------------------------------------------------------------

    async def sync(self) -> None:
        """Push the outbox, then pull until current. Raises on failure (the loop retries)."""
        async with self._lock:
            await self._push()
            await self._pull()

    async def push(self) -> None:
        """Push the outbox only."""
        async with self._lock:
            await self._push()

    async def pull(self) -> None:
        """Pull until current only (pending local writes stay on top)."""
        async with self._lock:
            await self._pull()

    async def _post(self, route: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self._post_raw(route, dumps(body).encode())

    async def _post_raw(self, route: str, body: bytes) -> tuple[int, Any]:
        status, raw = await self._transport.post(route, body)
        if status == 503 or status >= 500:
            raise BackendUnavailableError("sync", f"{route}: HTTP {status}")
        try:
            return status, json.loads(raw)
        except ValueError:
            raise ProtocolError(
                "bad_response", f"{route}: HTTP {status}, body is not JSON"
            ) from None

    async def _push(self) -> None:
        while True:
            after = int(await self._run(self._db.meta, "pushed_through") or 0)
            batch = await self._run(self._db.pending, after, self._batch)
            if not batch:
                return
            if batch[0][0] <= self._inflight:
                self._n["resent"] += 1
            self._inflight = batch[-1][0]
            status, answer = await self._post_raw("push", _push_body(self.client_id, batch))
            self._n["pushes"] += 1
            now = self._now_ms()
            if status == 200:
                self._n["duplicates"] += sum(r["status"] == "duplicate" for r in answer["results"])
                rejected = [
                    (r["mutation_id"], r.get("reason", "rejected"))
                    for r in answer["results"]
                    if r["status"] == "rejected"
                ]
                await self._run(
                    self._db.acknowledge, int(answer["last_mutation_id"]), rejected, now
                )
                self._inflight = 0
                continue
            code = answer.get("code") if isinstance(answer, dict) else None
            if status == 409 and code == "mutation_gap":
                # The server is behind what it acknowledged (e.g. restored from a backup).
                # Resend from its expected id if the outbox still holds it; otherwise the
                # writes in between are gone and only a new client_id can start over.
                expected = int(answer["expected"])
                held = await self._run(self._db.pending, expected - 1, 1)
                if held and held[0][0] == expected:
                    await self._run(self._db.set_pushed_through, expected - 1)
                    continue
                raise ProtocolError(
                    "mutation_gap",
                    f"the server expects mutation {expected}, which this outbox no longer holds;"
                    " use a new client_id",
                )
            too_big = code == "body_too_large" or (
                status == 400 and answer.get("field") == "mutations"
            )
            if too_big and len(batch) > 1:
                # The server takes smaller batches than configured: halve and go on.
                self._batch = max(1, len(batch) // 2)
                continue
            poison = _POISON_FIELD.match(str(answer.get("field", ""))) if status == 400 else None
            if poison is not None and int(poison.group(1)) < len(batch):
                mid = batch[int(poison.group(1))][0]
                reason = f"{answer.get('field')}: {answer.get('detail')}"
                _log.warning("sync mutation %d dead-lettered: %s", mid, reason)
                await self._run(self._db.bury_and_renumber, mid, reason, now)
                self._inflight = 0
                continue
            raise ProtocolError(str(code or "refused"), f"push: HTTP {status}: {answer}")

    async def _fetch(self, cursor: str | None, ack: str | None) -> dict[str, Any]:
        body = {
            "client_id": self.client_id,
            "collections": list(self.collections),
            "cursor": cursor,
            "limit": self.config.pull_limit,
        }
        if ack is not None and ack != cursor:
            body["ack"] = ack
        status, page = await self._post("pull", body)
        self._n["pulls"] += 1
        if status != 200:
            raise ProtocolError(str(page.get("code", "refused")), f"pull: HTTP {status}: {page}")
        return page  # type: ignore[no-any-return]

    async def _pull(self) -> None:
        # The next page is requested while this one is applied (the server reads while
        # the client writes); such a request acknowledges only the stored cursor.
        stored = await self._run(self._db.meta, "cursor")
        ahead: asyncio.Task[dict[str, Any]] | None = asyncio.ensure_future(
            self._fetch(stored, stored)
        )
        try:
            while ahead is not None:
                page = await ahead
                ahead = None
                if page["reset_required"] or page["has_more"]:
                    ahead = asyncio.ensure_future(self._fetch(page["cursor"], stored))
                stored = await self._apply(page)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead

    async def _apply(self, page: dict[str, Any]) -> str:
        """Check and store one page; the cursor now stored."""
        changes = page["changes"]
        keys = []
        data: list[str | None] = []
        for c in changes:
            keys.append((c["collection"], c["id"], c["version"], c["deleted"]))
            data.append(None if c["deleted"] else dumps(c["data"]))
        if changes_checksum(keys) != page["checksum"]:
            raise ProtocolError("bad_checksum", "a pull page failed its checksum")
        cursor = str(page["cursor"])
        if page["reset_required"]:
            self._n["resets"] += 1
            await self._run(self._db.reset, self.collections, cursor)
            return cursor
        if keys:
            top = max(k[2] for k in keys)
            try:
                self._clock.observe(parse_version(top))
            except ClockSkewError:
                _log.warning("sync: server version %s is ahead of this clock", top)
        final = not page["has_more"]
        await self._run(
            self._db.apply_page, changes, data, cursor, final,
            int(page["last_mutation_id"]), self._clock.last.encode(),
        )  # fmt: skip
        return cursor

    # --- background loop -------------------------------------------------------

    def poke(self) -> None:
        """Sync now (call it when the server's poke arrives)."""
        self._poked.set()

    def start(self) -> None:
        """Start the background loop (poke-driven plus ``interval``)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        failures = 0
        while not self._closed:
            self._poked.clear()
            try:
                await self.sync()
                failures = 0
                delay = self.config.interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must re-arm whatever went wrong
                failures += 1
                self._n["failures"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                _log.warning("sync failed (attempt %d): %s", failures, self._last_error)
                cap = min(self.config.backoff_max, self.config.backoff_base * 2**failures)
                delay = random.uniform(cap / 2, cap)
            async with self._attempted:
                self._attempted.notify_all()
            with_poke = failures == 0
            try:
                if with_poke:
                    await asyncio.wait_for(self._poked.wait(), delay)
                else:
                    await asyncio.sleep(delay)
            except asyncio.TimeoutError:
                pass

    async def wait_until(
        self, predicate: Callable[[SyncClientStats], bool], timeout: float
    ) -> SyncClientStats:
        """Wait (re-checking after each background attempt) until ``predicate(stats())``.

        Raises :class:`~fokha_integration.errors.OperationTimeoutError` after ``timeout``.
        """

        async def wait() -> SyncClientStats:
            async with self._attempted:
                while not predicate(stats := self.stats()):
                    await self._attempted.wait()
                return stats

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise OperationTimeoutError("sync wait_until", timeout) from None

    def stats(self) -> SyncClientStats:
        """Counters and queue sizes now."""
        pending, dead = self._db.counts()
        n = self._n
        return SyncClientStats(
            pending=pending,
            dead_letters=dead,
            pushes=n["pushes"],
            pulls=n["pulls"],
            resets=n["resets"],
            failures=n["failures"],
            resent_batches=n["resent"],
            duplicates=n["duplicates"],
            refused_skew=self._clock.refused,
            last_error=self._last_error,
        )

    async def close(self) -> None:
        """Stop the loop, close the transport and the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        await self._transport.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)
