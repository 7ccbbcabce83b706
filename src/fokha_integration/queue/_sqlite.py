"""The SQLite outbox store: one host, survives crashes and restarts.

The database is in WAL mode. Every call runs in one dedicated thread that owns the
connection, so the event loop never blocks on disk; calls that arrive while a
transaction is being written are committed together in the next one (group
commit), which is what makes thousands of durable publishes per second possible.

Tables: ``sinks`` (registered sink names), ``outbox`` (one row per envelope),
``pending`` (one row per envelope and sink still to deliver), ``dead`` (dead
letters). An append inserts the outbox row and one pending row per registered sink
in one transaction; an ack deletes a pending row; a dead letter deletes the pending
row and inserts the dead letter in one transaction. Delivered outbox rows are
deleted in the background.

One delivering process per database file (other processes may publish into it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import BackendError, ClosedError, ConfigError, translate_backend_error
from ..models import Envelope
from ._store import EnvelopeCache, TurnBatch
from ._types import DeadLetter, OutboxEntry

logger = logging.getLogger("fokha_integration.queue")

__all__ = ["SQLiteOutboxStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sinks (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    enqueued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead (
    ref INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_seq ON dead (seq);
"""

_Op = Callable[[sqlite3.Connection], Any]
_MAX_BATCH = 1024
_PARSE_CACHE = 8192
# Local hand-off (see _LocalTail): at most this many appended rows are remembered per
# sink, and the database is scanned again at least this often (seconds).
_LOCAL_LIMIT = 4096
_RESCAN_EVERY = 0.05
# Real time, not the store's injectable clock: it bounds how stale the local tail may
# get, and a frozen test clock must not freeze the rescans (tests replace it).
_monotonic = time.monotonic


class _Appended(NamedTuple):
    """A row this process appended, as its worker will be handed it."""

    seq: int
    enqueued_at: float
    envelope: Envelope


class _LocalTail:
    """Rows this process appended for one sink, handed to its worker from memory.

    Without it every fetch is a round trip to the database thread, and a delivery
    took four (the append's commit, a read that finds the row, a read that finds
    nothing more, the ack), each waiting its turn for the GIL while the event loop
    runs the sinks. When a scan of the database reached the end of the sink's
    pending rows (``caught_up``), every pending row it did not hand out is leased,
    so the only rows left to find are the ones appended after it: seqs grow with
    every commit, so those are exactly the appended rows past ``seen``, and this
    process knows them already. The database stays the truth: the tail is dropped
    whenever it cannot be trusted (a release or a replay put an older row back,
    more than ``_LOCAL_LIMIT`` rows waiting, the store reopened), and a scan runs at
    least every ``_RESCAN_EVERY`` seconds all the same, which finds what other
    processes appended into the file.
    """

    __slots__ = ("caught_up", "entries", "epoch", "scanned_at", "seen")

    def __init__(self) -> None:
        self.entries: deque[_Appended] = deque()
        self.caught_up = False
        self.seen = 0  # the highest seq a scan read or the tail handed out
        self.scanned_at = 0.0
        self.epoch = 0  # bumped by what invalidates a scan under way (release, replay)

    def add(self, row: _Appended) -> None:
        if len(self.entries) >= _LOCAL_LIMIT:
            self.forget()  # the sink is far behind: the next scans read the database
        else:
            self.entries.append(row)

    def forget(self) -> None:
        self.entries.clear()
        self.caught_up = False
        self.epoch += 1

    def usable(self, now: float) -> bool:
        return self.caught_up and now - self.scanned_at < _RESCAN_EVERY

    def scanned(self, epoch: int, now: float, complete: bool, last_seq: int) -> None:
        """A database scan started at ``epoch`` finished (``complete``: it reached the
        end of the pending rows and considered each one)."""
        self.seen = max(self.seen, last_seq)
        if epoch == self.epoch:
            self.caught_up = complete
            self.scanned_at = now

    def take(self, limit: int) -> list[_Appended]:
        """The next appended rows, in order, as long as they follow ``seen`` without a
        gap. Every writer of the file takes consecutive seqs, so a gap means another
        process committed rows in between: they come first, so the tail stops being
        trusted and the next fetch scans the database."""
        out: list[_Appended] = []
        entries = self.entries
        while entries and len(out) < limit:
            row = entries[0]
            if row.seq > self.seen + 1:
                self.caught_up = False
                break
            entries.popleft()
            if row.seq > self.seen:  # rows a scan read were handed out (or are) by it
                self.seen = row.seq
                out.append(row)
        return out


def _pending_rows(
    sink: str, after: int, limit: int
) -> Callable[[sqlite3.Connection], list[tuple[int, float]]]:
    """The database call that reads ``sink``'s next pending rows past seq ``after``."""

    def op(conn: sqlite3.Connection) -> list[tuple[int, float]]:
        return conn.execute(
            "SELECT seq, enqueued_at FROM pending WHERE sink = ? AND seq > ? ORDER BY seq LIMIT ?",
            (sink, after, limit),
        ).fetchall()

    return op


def _insert_outbox_sql(count: int) -> str:
    """One multi-row ``INSERT`` of ``count`` outbox rows."""
    # Only "?" placeholders are joined in: no value reaches the SQL text.
    return "INSERT INTO outbox(id, data, enqueued_at) VALUES " + ",".join(  # noqa: S608
        ["(?, ?, ?)"] * count
    )


# A group is inserted in chunks of these sizes (its binary digits): a few statement
# shapes for SQLite's statement cache, and at most 768 parameters per statement
# (under SQLite's oldest default limit of 999).
_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_INSERT_SQL = {count: _insert_outbox_sql(count) for count in _CHUNKS}


def _append_rows(
    rows: list[tuple[str, str, float]], limit: int | None
) -> Callable[[sqlite3.Connection], list[int]]:
    """The database call that appends ``rows`` (id, text, enqueued_at) with one pending
    row per registered sink; it answers each row's seq, or 0 for an id already stored.
    ``limit``: when given, first refuse the group if a sink's backlog reached it.

    Few statements per group, whatever its size: each statement is a point where the
    database thread lets go of the GIL and must win it back from a busy event loop."""

    def op(conn: sqlite3.Connection) -> list[int]:
        if limit is not None:
            (fullest,) = conn.execute(
                "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM pending GROUP BY sink)"
            ).fetchone()
            if fullest is not None and fullest >= limit:
                raise BackendError("sqlite", "outbox is full (max_pending reached)")
        # Ids already stored (a repeated append) answer 0; so does a repeat within
        # this group. The write lock is held (BEGIN IMMEDIATE): nobody else inserts.
        ids = json.dumps([ident for ident, _, _ in rows])
        known = {
            ident
            for (ident,) in conn.execute(
                "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))", (ids,)
            )
        }
        fresh: list[tuple[str, str, float]] = []
        for row in rows:
            if row[0] not in known:
                known.add(row[0])
                fresh.append(row)
        if not fresh:
            return [0] * len(rows)
        # AUTOINCREMENT under the write lock, every row new: consecutive seqs, in order.
        at = last = 0
        for size in _CHUNKS:
            while len(fresh) - at >= size:
                values = [value for row in fresh[at : at + size] for value in row]
                last = conn.execute(_INSERT_SQL[size], values).lastrowid or 0
                at += size
        first = last - len(fresh) + 1
        fanned = conn.execute(
            "INSERT INTO pending(sink, seq, enqueued_at)"
            " SELECT s.name, o.seq, o.enqueued_at FROM outbox o CROSS JOIN sinks s"
            " WHERE o.seq BETWEEN ? AND ?",
            (first, last),
        ).rowcount
        if fanned == 0:  # the caller rolls the group back
            raise ConfigError("sinks", "no sink is registered: the envelope would reach nobody")
        seqs = {ident: first + i for i, (ident, _, _) in enumerate(fresh)}
        return [seqs.pop(ident, 0) for ident, _, _ in rows]  # a repeat finds it popped

    return op


def _load_texts(seqs: list[int]) -> Callable[[sqlite3.Connection], list[tuple[int, str]]]:
    """An op reading the envelope text of outbox rows ``seqs`` (pending rows keep theirs)."""
    wanted = json.dumps(seqs)

    def op(conn: sqlite3.Connection) -> list[tuple[int, str]]:
        rows: list[tuple[int, str]] = conn.execute(
            "SELECT seq, data FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
            (wanted,),
        ).fetchall()
        return rows

    return op


class _Outcome(Protocol):
    """Where the database thread puts a call's outcome: a future, or a :class:`_Then`."""

    def done(self) -> bool: ...
    def set_result(self, value: Any) -> None: ...
    def set_exception(self, exc: BaseException) -> None: ...


class _Then:
    """A call's outcome handed to a plain callback, ``callback(value, error)``, in the
    loop turn that receives it: a future's done-callbacks would run one turn later,
    and the appends' and acks' answers are on the path every delivery waits for."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[Any, BaseException | None], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._call(value, None)

    def set_exception(self, exc: BaseException) -> None:
        self._call(None, exc)

    def _call(self, value: Any, exc: BaseException | None) -> None:
        self._done = True
        try:
            self._callback(value, exc)
        except Exception as error:  # a bug of ours: report it, resolve the other calls
            asyncio.get_running_loop().call_exception_handler(
                {"message": "SQLite outbox: a completion callback failed", "exception": error}
            )


def _fail_all(futures: Sequence[asyncio.Future[Any]], exc: BaseException | None) -> None:
    """Fail every waiting caller of a group with ``exc`` (``None``: cancel them)."""
    for fut in futures:
        if fut.done():
            continue
        if exc is None:
            fut.cancel()
        else:
            fut.set_exception(exc)


def _translate(exc: BaseException) -> BaseException:
    """sqlite3 (and OS) errors as the library's own, through the sqlite driver table."""
    return translate_backend_error("sqlite", exc)


class _DbThread:
    """The thread that owns the connection and commits queued calls in batches."""

    def __init__(self, path: str, synchronous: str, file_check_interval: float | None) -> None:
        self._path = path
        self._sync = synchronous
        # The file's identity, checked every file_check_interval seconds (when there
        # is work): a file deleted or replaced while open would take every later
        # commit with it at the next restart, so the store fails loudly instead.
        self._check_every = file_check_interval
        self._next_check = 0.0
        self._identity: tuple[int, int] | None = None
        self._broken: BackendError | None = None
        self._q: queue.SimpleQueue[tuple[_Op, _Outcome, asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fokha-sqlite-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise _translate(self._error) from self._error

    def submit(self, op: _Op) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put((op, fut, loop))
        return fut

    def submit_then(self, op: _Op, callback: Callable[[Any, BaseException | None], None]) -> None:
        """Queue ``op``; ``callback(value, error)`` runs on the loop when it is done."""
        self._q.put((op, _Then(callback), asyncio.get_running_loop()))

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.executescript(_SCHEMA)
        try:  # appends look ids up through json_each (JSON1: built in since SQLite 3.38)
            conn.execute("SELECT value FROM json_each('[1]')").fetchall()
        except sqlite3.OperationalError:
            conn.close()
            raise ConfigError(
                "sqlite",
                f"SQLite {sqlite3.sqlite_version} lacks the JSON1 functions the outbox needs",
                sqlite3.sqlite_version,
            ) from None
        if self._check_every is not None and os.path.exists(self._path):
            st = os.stat(self._path)
            self._identity = (st.st_dev, st.st_ino)
        return conn

    def _file_problem(self) -> BackendError | None:
        """Why the database file can no longer be trusted, or ``None``."""
        if self._identity is None:
            return None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                return None
            what = "replaced"
        logger.error("SQLite outbox: %s was %s while open; refusing every call", self._path, what)
        return BackendError(
            "sqlite",
            f"the database file {self._path} was {what} while open: what is written now "
            "would be lost at the next restart; restore the file and restart",
        )

    def _check_file(self) -> BackendError | None:
        if self._broken is None and self._check_every is not None:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + self._check_every
                self._broken = self._file_problem()
        return self._broken

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                item = self._q.get()
                if item is None:
                    break
                batch = [item]
                while len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
                broken = self._check_file()
                if broken is not None:
                    self._deliver_all(batch, [(False, broken)] * len(batch))
                    continue
                self._run_batch(conn, batch)
        finally:
            conn.close()

    @staticmethod
    def _resolve(outcomes: list[tuple[_Outcome, bool, Any]]) -> None:
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _deliver_all(
        self,
        batch: list[tuple[_Op, _Outcome, asyncio.AbstractEventLoop]],
        outcomes: list[tuple[bool, Any]],
    ) -> None:
        # One wake-up of each event loop per batch, not one per call.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Outcome, bool, Any]]] = {}
        for (_, fut, loop), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(self._resolve, items)

    def _run_batch(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[_Op, _Outcome, asyncio.AbstractEventLoop]],
    ) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _, _ in batch:
                outcomes.append((True, op(conn)))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            # One call failed: run each alone so only that one sees its error.
            outcomes = []
            for item in batch:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    value = item[0](conn)
                    conn.execute("COMMIT")
                except BaseException as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    outcomes.append((False, _translate(exc)))
                else:
                    outcomes.append((True, value))
        self._deliver_all(batch, outcomes)


class SQLiteOutboxStore:
    """An :class:`OutboxStore` in a SQLite file (WAL), for one host.

    ``synchronous`` is SQLite's setting: ``"NORMAL"`` (default) survives a crash of
    the process at any line (what the crash tests check) but can lose the last
    commits on power loss; ``"FULL"`` also survives power loss, at the cost of an
    fsync per group commit. ``max_pending`` bounds each sink's backlog (checked
    every 256 appends; past it appends raise :class:`BackendError`).
    ``file_check_interval`` (seconds, ``None``: off) is how often the store checks
    that its file is still the one it opened: a file deleted or replaced while open
    makes every later call raise :class:`BackendError` instead of accepting
    signals a restart would lose.

    An acknowledgement that fails (a full disk) keeps its entry leased and is
    retried with a growing pause (up to a second): the entry is never handed out
    again meanwhile, so a failing disk cannot cause a redelivery storm.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_pending: int = 1_000_000,
        file_check_interval: float | None = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.upper() not in (
            "NORMAL",
            "FULL",
            "EXTRA",
        ):
            raise ConfigError("synchronous", "must be NORMAL, FULL or EXTRA", synchronous)
        self._path = str(path)
        self._sync = synchronous.upper()
        self._max_pending = check.integer("max_pending", max_pending, minimum=1)
        self._file_check = check.optional_number(
            "file_check_interval", file_check_interval, exclusive_minimum=0.0
        )
        self._ack_retry_delay = 0.0  # the pause before re-trying failed acks (0: none failed)
        self._clock = clock
        self._db: _DbThread | None = None
        self._leased: dict[str, set[int]] = {}
        self._cursor: dict[str, int] = {}
        self._appends = 0
        self._acks = 0
        self._parsed: EnvelopeCache[int] = EnvelopeCache(_PARSE_CACHE)
        # Acknowledgements made in this loop turn: (entry, future, or None for ack_nowait).
        self._acks_batch: TurnBatch[tuple[OutboxEntry, asyncio.Future[None] | None]]
        self._acks_batch = TurnBatch(self._flush_acks, _MAX_BATCH)
        self._appends_batch: TurnBatch[tuple[Envelope, str, float, asyncio.Future[int]]]
        self._appends_batch = TurnBatch(self._flush_appends, _MAX_BATCH)
        self._append_watchers: list[Callable[[], None]] = []
        self._settled: dict[str, set[int]] = {}  # per sink, during its fetch (see fetch)
        self._tails: dict[str, _LocalTail] = {}  # per sink of this process (see _LocalTail)

    async def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise ClosedError("the SQLite outbox store is not open")
        result: T = await self._db.submit(op)
        return result

    async def open(self, sinks: Sequence[str]) -> None:
        """Open the file (creating the schema) and register ``sinks``."""
        if self._db is None:
            db = _DbThread(self._path, self._sync, self._file_check)
            await asyncio.get_running_loop().run_in_executor(None, db.start)
            self._db = db
        names = list(sinks)

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO sinks(name) VALUES (?)", [(n,) for n in names])

        await self._call(op)
        for name in names:
            self._leased.setdefault(name, set())
            self._cursor.setdefault(name, 0)
            self._tails.setdefault(name, _LocalTail())

    async def registered_sinks(self) -> list[str]:
        """The sink names appends fan out to."""

        def op(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT name FROM sinks ORDER BY name")]

        return await self._call(op)

    async def close(self) -> None:
        """Finish queued calls (appends and acknowledgements included) and close the file."""
        self._appends_batch.flush()
        self._acks_batch.flush()
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(None, db.stop)
        self._leased.clear()
        self._cursor.clear()
        self._tails.clear()

    async def append(self, envelope: Envelope) -> bool:
        """Insert the envelope and one pending row per registered sink (one transaction).

        Appends made in one event-loop turn are written by one grouped statement set
        in the same transaction (each caller still gets its own answer): per-append
        statements cost the database thread more than the writes themselves.
        """
        if self._db is None:
            raise ClosedError("the SQLite outbox store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._appends_batch.add((envelope, envelope.to_json(), self._clock.time(), fut))
        seq = await fut
        if not seq:
            return False
        self._parsed.put(seq, envelope)
        return True

    def _flush_appends(self, batch: list[tuple[Envelope, str, float, asyncio.Future[int]]]) -> None:
        futures = [fut for _, _, _, fut in batch]
        if self._db is None:
            _fail_all(futures, ClosedError("the SQLite outbox store is not open"))
            return
        rows = [(envelope.id, data, now) for envelope, data, now, _ in batch]
        self._appends += len(rows)
        check = self._appends // 256 != (self._appends - len(rows)) // 256
        op = _append_rows(rows, self._max_pending if check else None)

        def done(seqs: list[int], exc: BaseException | None) -> None:
            if exc is not None:
                _fail_all(futures, exc)
            else:
                for (envelope, _, now, fut), seq in zip(batch, seqs, strict=True):
                    if seq:
                        appended = _Appended(seq, now, envelope)
                        for tail in self._tails.values():
                            tail.add(appended)
                    if not fut.done():
                        fut.set_result(seq)
                if any(seqs):
                    for watcher in list(self._append_watchers):
                        watcher()

        self._db.submit_then(op, done)

    def watch_appends(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` in the event loop as soon as a group of appends is
        committed (see :class:`~fokha_integration.queue.WatchedOutboxStore`); returns
        the function that stops it."""
        self._append_watchers.append(callback)

        def unwatch() -> None:
            with contextlib.suppress(ValueError):
                self._append_watchers.remove(callback)

        return unwatch

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        """Lease up to ``limit`` pending entries of ``sink``, oldest first."""
        leased = self._leased.setdefault(sink, set())
        self._cursor.setdefault(sink, 0)
        tail = self._tails.get(sink)
        started = _monotonic()
        trusted = tail is not None and tail.usable(started)
        chosen = tail.take(limit) if tail is not None and trusted else []
        if tail is None or not trusted or not tail.caught_up:
            # Not trusted, stale, or it just met a gap: the database answers (rows the
            # tail had taken are still pending and unleased, so the scan finds them).
            epoch = 0 if tail is None else tail.epoch
            # Entries acknowledged while this fetch waits on the database (their pending
            # row may still be in what it read) must not be handed out again.
            settled = self._settled[sink] = set()
            try:
                chosen, complete, last_seq = await self._choose(sink, limit, leased)
            finally:
                self._settled.pop(sink, None)
            chosen = [c for c in chosen if c.seq not in settled]
            if tail is not None:
                tail.scanned(epoch, started, complete, last_seq)
        out: list[OutboxEntry] = []
        for row in chosen:
            leased.add(row.seq)
            out.append(OutboxEntry(sink, str(row.seq), row.envelope, row.enqueued_at))
        return out

    async def _choose(
        self, sink: str, limit: int, leased: set[int]
    ) -> tuple[list[_Appended], bool, int]:
        """Read the next pending rows past the cursor that are not leased, and their
        envelopes; also whether the scan reached the end of the pending rows having
        considered each one, and the last seq it considered."""
        cursor = self._cursor.get(sink, 0)
        chosen: list[tuple[int, float]] = []
        complete = False
        last_seq = 0
        while True:
            # Past the cursor, rows are mostly not leased: read what is wanted and read
            # on if leased rows took some of it. From the start (after a release, a
            # replay, or a scan that reached the end) the leased rows come first.
            want = limit - len(chosen)
            scan = want + (0 if cursor else len(leased))
            rows = await self._call(_pending_rows(sink, cursor, scan))
            considered = 0
            for seq, enqueued_at in rows:
                if len(chosen) >= limit:
                    break
                considered += 1
                cursor = last_seq = seq
                if seq not in leased:
                    chosen.append((seq, enqueued_at))
            if len(rows) < scan:
                complete = considered == len(rows)
                # The scan reached the end: the next one starts again from the oldest
                # pending row, so rows put back below the cursor by another process (a
                # dead-letter replay from `fokha queue replay`) are found. That rescan
                # reads at most the leased rows again, which max_in_flight bounds.
                cursor = 0
                break
            if len(chosen) >= limit:
                break
        self._cursor[sink] = cursor
        # Every sink reads the same envelope: its text is read and parsed once, by
        # whichever sink gets there first (the others find it in the parse cache).
        # Cached envelopes are taken into a local dict at once: parsing the others
        # (or another sink's fetch, across an await) may evict them from the cache.
        found: dict[int, Envelope] = {}
        texts: dict[int, str] = {}
        while True:
            missing: list[int] = []
            for seq, _ in chosen:
                if seq in found or seq in texts:
                    continue
                cached = self._parsed.get(seq)
                if cached is None:
                    missing.append(seq)
                else:
                    found[seq] = cached
            if not missing:
                break
            loaded = await self._call(_load_texts(missing))
            texts.update(loaded)
            if len(loaded) < len(missing):
                # Rows acknowledged meanwhile and compacted away: nothing to deliver.
                gone = set(missing) - set(texts)
                chosen = [(seq, at) for seq, at in chosen if seq not in gone]
        out: list[_Appended] = []
        for seq, enqueued_at in chosen:
            envelope = found.get(seq)
            if envelope is None:
                envelope = self._parsed.parse(seq, texts[seq])
            out.append(_Appended(seq, enqueued_at, envelope))
        return out, complete, last_seq

    def _unlease(self, entry: OutboxEntry) -> None:
        leased = self._leased.get(entry.sink)
        if leased is not None:
            leased.discard(int(entry.ref))

    def _settle_entry(self, entry: OutboxEntry) -> None:
        """``entry`` left pending for good (acknowledged or dead-lettered)."""
        self._unlease(entry)
        settled = self._settled.get(entry.sink)
        if settled is not None:
            settled.add(int(entry.ref))

    async def ack(self, entry: OutboxEntry) -> None:
        """Delete the pending row (acks made in one loop turn share one statement)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks_batch.add((entry, fut))
        await fut
        self._settle_entry(entry)

    def ack_nowait(self, entry: OutboxEntry) -> None:
        """:meth:`ack` without waiting for the commit (what :class:`SignalQueue` calls).

        The entry stays leased until its row is deleted, so it is not handed out
        again meanwhile. Should the delete fail, it is retried after a growing pause
        (the entry stays leased: no redelivery); entries still unacknowledged at
        :meth:`close` are pending for the next opener (at-least-once).
        """
        self._acks_batch.add((entry, None))

    def _flush_acks(self, batch: list[tuple[OutboxEntry, asyncio.Future[None] | None]]) -> None:
        rows = [(entry.sink, int(entry.ref)) for entry, _ in batch]
        self._acks += len(rows)
        compact = self._acks // 1000 != (self._acks - len(rows)) // 1000

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM pending WHERE sink = ? AND seq = ?", rows)
            if compact:
                conn.execute(
                    # MIN per sink uses the (sink, seq) primary key: no scan of pending.
                    "DELETE FROM outbox WHERE seq < COALESCE((SELECT MIN(m) FROM"
                    " (SELECT (SELECT MIN(seq) FROM pending WHERE sink = s.name) AS m"
                    " FROM sinks s)), (SELECT MAX(seq) + 1 FROM outbox))"
                    " AND seq NOT IN (SELECT seq FROM dead)"
                )

        def done(_: None, exc: BaseException | None) -> None:
            failed = exc is not None
            retry: list[OutboxEntry] = []
            for entry, fut in batch:
                if fut is None:  # ack_nowait: settle here, or keep the lease and retry
                    if failed:
                        retry.append(entry)
                    else:
                        self._settle_entry(entry)
                elif fut.done():
                    continue
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(None)
            if retry:
                self._retry_acks(retry, exc)
            elif not failed:
                self._ack_retry_delay = 0.0

        if self._db is None:
            closed = ClosedError("the SQLite outbox store is not open")
            for entry, fut in batch:
                if fut is None:
                    self._give_back(entry)
                elif not fut.done():
                    fut.set_exception(closed)
            return
        self._db.submit_then(op, done)

    def _retry_acks(self, entries: list[OutboxEntry], exc: BaseException | None) -> None:
        """Acks that failed: the entries stay leased; try again after a growing pause."""
        delay = min(1.0, max(0.01, self._ack_retry_delay * 2))
        self._ack_retry_delay = delay
        logger.warning(
            "SQLite outbox: %d acknowledgements failed (%r); retrying in %.2fs",
            len(entries),
            exc,
            delay,
        )

        def again() -> None:
            if self._db is None:
                return  # closed: the entries are pending for the next opener
            for entry in entries:
                self.ack_nowait(entry)

        asyncio.get_running_loop().call_later(delay, again)

    async def release(self, entry: OutboxEntry) -> None:
        """Forget the lease; the entry is fetched again."""
        self._give_back(entry)

    def _give_back(self, entry: OutboxEntry) -> None:
        # The next fetch scans from the oldest pending row, so it finds this one.
        self._unlease(entry)
        self._cursor[entry.sink] = 0
        tail = self._tails.get(entry.sink)
        if tail is not None:
            tail.forget()

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        """Delete the pending row and insert the dead letter, in one transaction."""
        seq = int(entry.ref)
        text = letter.to_json()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pending WHERE sink = ? AND seq = ?", (entry.sink, seq))
            conn.execute(
                "INSERT INTO dead(sink, seq, data) VALUES (?, ?, ?)", (entry.sink, seq, text)
            )

        await self._call(op)
        self._settle_entry(entry)

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""

        def op(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            if sink is None:
                return conn.execute(
                    "SELECT ref, data FROM dead ORDER BY ref LIMIT ?", (limit,)
                ).fetchall()
            return conn.execute(
                "SELECT ref, data FROM dead WHERE sink = ? ORDER BY ref LIMIT ?", (sink, limit)
            ).fetchall()

        rows = await self._call(op)
        return [DeadLetter.from_json(data, ref=str(ref)) for ref, data in rows]

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        """Move dead letters back to pending (the envelope row is still there)."""
        now = self._clock.time()
        wanted = None if refs is None else [int(r) for r in refs]

        def op(conn: sqlite3.Connection) -> int:
            sql = "SELECT ref, sink, seq FROM dead WHERE 1=1"
            params: list[Any] = []
            if sink is not None:
                sql += " AND sink = ?"
                params.append(sink)
            rows = conn.execute(sql + " ORDER BY ref", params).fetchall()
            if wanted is not None:
                keep = set(wanted)
                rows = [r for r in rows if r[0] in keep]
            for ref, s, seq in rows:
                conn.execute(
                    "INSERT OR IGNORE INTO pending(sink, seq, enqueued_at) VALUES (?, ?, ?)",
                    (s, seq, now),
                )
                conn.execute("DELETE FROM dead WHERE ref = ?", (ref,))
            return len(rows)

        count = await self._call(op)
        for name in self._cursor:
            self._cursor[name] = 0
        for tail in self._tails.values():
            tail.forget()
        return count

    async def stats(self, sink: str) -> tuple[int, float | None]:
        """Pending count and the oldest enqueue time."""

        def op(conn: sqlite3.Connection) -> tuple[int, float | None]:
            row = conn.execute(
                "SELECT COUNT(*), MIN(enqueued_at) FROM pending WHERE sink = ?", (sink,)
            ).fetchone()
            return int(row[0]), (None if row[1] is None else float(row[1]))

        return await self._call(op)
