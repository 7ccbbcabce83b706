"""The asyncio file bridge: messages, requests with replies, snapshots, heartbeat.

:class:`FileBridge` implements protocol v1 (``docs/protocols/file-bridge.md``) over a
root folder shared with a MetaTrader 5 EA (or any peer that follows the spec). File
operations block; they are short (one small file each) and run inline, except with
``durability="fsync"`` where the fsyncs run in a worker thread.

It is not a general message broker: one consumer per incoming folder, one process per
``sender`` name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ClosedError, ConfigError, FrameError, OperationTimeoutError
from ..models import canonical_json, new_id
from ._folders import (
    DirectionPaths,
    Durability,
    fsync_dir,
    message_name,
    move_file,
    parse_message_name,
    parse_snapshot_name,
    snapshot_name,
    valid_sender,
    valid_snapshot_name,
    write_file,
)
from ._frame import (
    MAX_FRAME_BYTES,
    CorruptFrameError,
    Frame,
    IncompleteFrameError,
    decode_frame,
    encode_frame,
    valid_id,
)
from ._journal import Journal

__all__ = [
    "BridgeStats",
    "FileBridge",
    "Handler",
    "Message",
    "PollConfig",
    "Reply",
    "ReplyStatus",
    "Snapshot",
]

T = TypeVar("T")
_KIND_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TYPES = frozenset({"message", "request", "reply"})


class ReplyStatus(str, Enum):
    """What happened to a request: ``accepted`` is interim, the others are final."""

    ACCEPTED = "accepted"
    EXECUTED = "executed"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether no later reply to the same request is expected."""
        return self is not ReplyStatus.ACCEPTED


@dataclass(frozen=True, slots=True)
class PollConfig:
    """How often the reader lists ``new/``.

    ``busy`` seconds between scans while messages flow (and for ``busy_window``
    seconds after the last one, or after a send); then the interval grows by
    ``backoff`` per empty scan up to ``idle``.
    """

    busy: float = 0.002
    idle: float = 0.05
    busy_window: float = 0.5
    backoff: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.busy <= self.idle:
            raise ConfigError("poll.busy", "must be > 0 and <= idle", self.busy)
        if self.busy_window < 0:
            raise ConfigError("poll.busy_window", "must be >= 0", self.busy_window)
        if self.backoff < 1:
            raise ConfigError("poll.backoff", "must be >= 1", self.backoff)


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming message as the handler sees it.

    ``redelivered`` is true when a previous run began handling this id and did not
    record it done (it crashed in between): a handler whose effect cannot be repeated
    must check whether the effect already happened.
    """

    id: str
    type: str
    kind: str
    body: dict[str, Any]
    sender: str
    sent_at: float
    seq: int
    in_reply_to: str | None = None
    status: ReplyStatus | None = None
    details: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False

    @property
    def is_request(self) -> bool:
        """Whether the sender waits for a reply."""
        return self.type == "request"


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a request.

    A handler returns ``Reply(ReplyStatus.EXECUTED, {"ticket": 1})``; the bridge fills
    in ``id``, ``in_reply_to``, ``sender`` and ``sent_at``.
    """

    status: ReplyStatus
    details: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""
    in_reply_to: str = ""
    sender: str = ""
    sent_at: float = 0.0

    @property
    def ticket(self) -> Any:
        """``details["ticket"]`` (the MT5 order/deal ticket) or ``None``."""
        return self.details.get("ticket")

    @property
    def retcode(self) -> Any:
        """``details["retcode"]`` (the MT5 trade server return code) or ``None``."""
        return self.details.get("retcode")

    @property
    def message(self) -> str:
        """``details["message"]`` or ``""``."""
        return str(self.details.get("message", ""))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest value of something the peer publishes (positions, account, heartbeat)."""

    name: str
    seq: int
    sender: str
    sent_at: float
    body: dict[str, Any]


@dataclass(slots=True)
class BridgeStats:
    """Counters of one bridge instance since it started."""

    sent: int = 0
    resent: int = 0
    received: int = 0
    duplicates: int = 0
    redelivered: int = 0
    replies_sent: int = 0
    replies_received: int = 0
    bad: int = 0
    handler_errors: int = 0
    recovered_tmp: int = 0
    reconciled_cur: int = 0
    peer_restarts: int = 0


Handler = Callable[[Message], Awaitable["Reply | None"]]
"""An incoming-message handler: returns a :class:`Reply` for a request, else ``None``."""


@dataclass(slots=True)
class _NotReady:
    size: int
    mtime_ns: int
    since: float


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Reply]
    final: bool


class FileBridge:
    """Crash-safe file messaging with a peer (normally an MT5 EA), protocol v1.

    ``root`` is the bridge folder (e.g. ``<MT5 data>/MQL5/Files/fokha``). This side is
    ``local`` and writes into ``root/<local>2<peer>``; it reads ``root/<peer>2<local>``.
    ``sender`` names this writer in file names (default: ``local``); two processes
    writing into one folder need different senders. ``receive=False`` makes a
    send-only bridge (no reader, no journal). ``handler`` handles incoming messages;
    without it, iterate :meth:`messages`.

    ``durability``: ``none`` (no flush), ``flush`` (survives a process crash, the
    default) or ``fsync`` (also a power cut; fsyncs run in a thread). ``poll`` sets the
    adaptive scan of ``new/``; ``watch=True`` adds a file-watcher wake-up (the
    ``[watch]`` extra). ``grace`` is how long a file may stay incomplete and unchanged
    before it goes to ``bad/``. ``close()`` lets the message in hand finish for up to
    ``close_timeout`` seconds. Deadlines use ``clock``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        local: str = "py",
        peer: str = "ea",
        sender: str | None = None,
        encoding: str = "utf-8",
        durability: Durability = "flush",
        poll: PollConfig | None = None,
        handler: Handler | None = None,
        receive: bool = True,
        grace: float = 5.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        keep_done: bool = False,
        done_retention: float = 3600.0,
        journal_retention: float = 7 * 86400.0,
        journal_max_entries: int = 100_000,
        heartbeat_interval: float | None = 1.0,
        watch: bool = False,
        close_timeout: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
    ) -> None:
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise ConfigError("encoding", "protocol v1 frames are UTF-8 only", encoding)
        if durability not in ("none", "flush", "fsync"):
            raise ConfigError("durability", "must be 'none', 'flush' or 'fsync'", durability)
        for name, value in (("local", local), ("peer", peer)):
            if not valid_sender(value):
                raise ConfigError(name, "must be 1..32 of [A-Za-z0-9_]", value)
        self.sender = sender or local
        if not valid_sender(self.sender):
            raise ConfigError("sender", "must be 1..32 of [A-Za-z0-9_]", sender)
        if grace < 0:
            raise ConfigError("grace", "must be >= 0", grace)
        if not 256 <= max_frame_bytes <= 64 << 20:
            raise ConfigError("max_frame_bytes", "must be 256..64 MiB", max_frame_bytes)
        self.root = Path(root)
        self.local = local
        self.peer = peer
        self.durability: Durability = durability
        self.poll = poll or PollConfig()
        self.grace = grace
        self.max_frame_bytes = max_frame_bytes
        self.keep_done = keep_done
        self.done_retention = done_retention
        self.heartbeat_interval = heartbeat_interval
        self.outgoing = DirectionPaths(self.root / f"{local}2{peer}")
        self.incoming = DirectionPaths(self.root / f"{peer}2{local}")
        self._out_tmp = str(self.outgoing.tmp)
        self._out_new = str(self.outgoing.new)
        self._in_new = str(self.incoming.new)
        self._in_cur = str(self.incoming.cur)
        self.instance = new_id()
        self.stats = BridgeStats()
        self._handler = handler
        self._receive = receive
        self._watch = watch
        self._clock = clock
        self._log = logger or logging.getLogger("fokha_integration.bridge")
        self._journal = Journal(
            self.root / "state" / f"{local}.journal",
            durability=durability,
            retention=journal_retention,
            max_entries=journal_max_entries,
        )
        self._last_seq = 0
        self._send_lock = asyncio.Lock()
        self._pending: dict[str, _Pending] = {}
        self._not_ready: dict[str, _NotReady] = {}
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._busy_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[tuple[Message, asyncio.Future[Reply | None]]] = asyncio.Queue(
            maxsize=1
        )
        self._iterating = False
        self._handoff = ""
        self._reader_task: asyncio.Task[None] | None = None
        self.close_timeout = close_timeout
        self._current: dict[str, asyncio.Future[Reply | None]] = {}
        self._started = False
        self._closed = False
        self._peer_instance: str | None = None
        self._skipped_snapshots: set[str] = set()
        self._last_done_sweep = 0.0

    # -- life cycle --------------------------------------------------------------------

    async def __aenter__(self) -> FileBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the folders, recover leftovers, load the journal, start the loops."""
        if self._started:
            return
        self._started = True
        self.outgoing.create()
        self.incoming.create()
        self._recover_tmp()
        if self._receive:
            await self._blocking(self._journal.open, self._clock.time())
            self._reader_task = asyncio.create_task(self._reader_loop(), name="bridge-reader")
            self._tasks.append(self._reader_task)
            if self._watch:
                self._tasks.append(asyncio.create_task(self._watch_loop(), name="bridge-watch"))
        if self.heartbeat_interval:
            await self.heartbeat()
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="bridge-beat"))

    async def close(self) -> None:
        """Stop the loops and close the journal; pending requests fail with ClosedError."""
        if self._closed:
            return
        self._closed = True
        # Let the reader finish the message in hand (its reply and acknowledgement),
        # up to close_timeout; a message handed to a messages() consumer counts as
        # acknowledged when the bridge closes, as when the consumer leaves its loop.
        reader = self._reader_task
        if reader is not None and not reader.done():
            if self._handoff == "put":
                reader.cancel()
            for fut in self._current.values():
                if not fut.done():
                    fut.set_result(None)
            self._mark_busy()
            await asyncio.wait({reader}, timeout=self.close_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ClosedError("the file bridge was closed"))
        self._journal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the file bridge is closed")
        if not self._started:
            raise ClosedError("the file bridge is not started (use 'async with' or start())")

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        # Short file operations run inline; fsync can take milliseconds: use a thread.
        if self.durability == "fsync":
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def _recover_tmp(self) -> None:
        """Start-up recovery of this writer's tmp/ (spec 6.1 step 4) and its seq floor."""
        floor = 0
        for folder in (self.outgoing.tmp, self.outgoing.new):
            for entry in os.scandir(folder):
                parsed = parse_message_name(entry.name)
                if parsed is not None and parsed.sender == self.sender:
                    floor = max(floor, parsed.seq)
        self._last_seq = floor
        for entry in os.scandir(self.outgoing.tmp):
            path = Path(entry.path)
            if entry.name.endswith(f".{self.sender}.snap"):
                path.unlink(missing_ok=True)
                continue
            parsed = parse_message_name(entry.name)
            if parsed is None or parsed.sender != self.sender:
                continue
            try:
                decode_frame(path.read_bytes(), max_frame_bytes=self.max_frame_bytes)
            except FrameError:
                path.unlink(missing_ok=True)
                self._log.info("discarded unfinished %s from tmp/", entry.name)
                continue
            move_file(path, self.outgoing.new / entry.name)
            self.stats.recovered_tmp += 1
            self._log.info("published complete %s left in tmp/ by a crash", entry.name)

    # -- sending -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._last_seq = max(self._last_seq + 1, int(self._clock.time() * 1_000_000))
        return self._last_seq

    def _publish(self, name: str, data: bytes, dest_dir: str) -> None:
        # Plain string paths on the hot path: pathlib costs more than the syscalls here.
        tmp = os.path.join(self._out_tmp, name)
        write_file(tmp, data, self.durability)
        move_file(tmp, os.path.join(dest_dir, name))
        if self.durability == "fsync":
            fsync_dir(dest_dir)

    async def _send_payload(self, msg_id: str, payload: Mapping[str, Any]) -> None:
        body = canonical_json(payload).encode("utf-8")
        async with self._send_lock:
            seq = self._next_seq()
            name = message_name(seq, self.sender, msg_id)
            data = encode_frame(msg_id, seq, body)
            if len(data) > self.max_frame_bytes:
                raise ConfigError("body", f"frame of {len(data)} bytes exceeds max_frame_bytes")
            await self._blocking(self._publish, name, data, self._out_new)

    def _payload(self, type_: str, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise ConfigError("kind", "must be 1..64 of [A-Za-z0-9_.-]", kind)
        if not isinstance(body, Mapping):
            raise ConfigError("body", "must be a JSON object", body)
        return {
            "type": type_,
            "kind": kind,
            "sender": self.sender,
            "sent_at": round(self._clock.time(), 6),
            "body": dict(body),
        }

    async def send(self, kind: str, body: Mapping[str, Any], *, id: str | None = None) -> str:
        """Send a one-way message; returns its id (given, or a new sortable one)."""
        self._check_open()
        msg_id = id or new_id()
        if not valid_id(msg_id):
            raise ConfigError("id", "must be 1..64 of [A-Za-z0-9_-]", msg_id)
        await self._send_payload(msg_id, self._payload("message", kind, body))
        self.stats.sent += 1
        return msg_id

    async def request(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        id: str | None = None,
        timeout: float = 30.0,
        resend_after: float | None = 5.0,
        final: bool = True,
    ) -> Reply:
        """Send a request and wait for its reply.

        Without a reply within ``resend_after`` seconds the request is written again
        with the **same id** (the peer's journal makes that safe), until ``timeout``,
        which raises :class:`OperationTimeoutError`. With ``final`` an ``accepted``
        reply does not end the wait. Passing the ``id`` of a request sent before a
        restart waits for (or re-obtains) that request's reply.
        """
        self._check_open()
        if not self._receive:
            raise ConfigError("receive", "request() needs a bridge that receives", False)
        msg_id = id or new_id()
        if not valid_id(msg_id):
            raise ConfigError("id", "must be 1..64 of [A-Za-z0-9_-]", msg_id)
        if timeout <= 0:
            raise ConfigError("timeout", "must be > 0", timeout)
        payload = self._payload("request", kind, body)
        pending = self._pending.get(msg_id)
        if pending is None:
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            pending = self._pending[msg_id] = _Pending(fut, final)
        deadline = self._clock.monotonic() + timeout
        first = True
        try:
            while True:
                await self._send_payload(msg_id, payload)
                if first:
                    self.stats.sent += 1
                    first = False
                else:
                    self.stats.resent += 1
                self._mark_busy()
                remaining = deadline - self._clock.monotonic()
                wait = remaining if resend_after is None else min(resend_after, remaining)
                try:
                    return await asyncio.wait_for(asyncio.shield(pending.future), max(0.0, wait))
                except asyncio.TimeoutError:
                    if self._clock.monotonic() >= deadline:
                        raise OperationTimeoutError(f"request {msg_id}", timeout) from None
        finally:
            if self._pending.get(msg_id) is pending:
                del self._pending[msg_id]

    def _mark_busy(self) -> None:
        self._busy_until = self._clock.monotonic() + self.poll.busy_window
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- snapshots and heartbeat -------------------------------------------------------

    def _write_snapshot(self, name: str, data: bytes, seq: int) -> None:
        tmp = self.outgoing.tmp / f"{name}.{seq:020d}.{self.sender}.snap"
        write_file(tmp, data, self.durability)
        move_file(tmp, self.outgoing.snap / snapshot_name(name, seq))
        if self.durability == "fsync":
            fsync_dir(self.outgoing.snap)
        versions = []
        for entry in os.scandir(self.outgoing.snap):
            parsed = parse_snapshot_name(entry.name)
            if parsed is not None and parsed[0] == name:
                versions.append(parsed[1])
        versions.sort()
        for old in versions[:-2]:
            with contextlib.suppress(FileNotFoundError):
                (self.outgoing.snap / snapshot_name(name, old)).unlink()

    async def write_snapshot(self, name: str, body: Mapping[str, Any]) -> None:
        """Publish the latest value ``body`` under ``name`` (atomic for readers)."""
        self._check_open()
        if not valid_snapshot_name(name):
            raise ConfigError("name", "must be 1..32 of [a-z0-9_]", name)
        payload = self._payload("snapshot", name, body)
        text = canonical_json(payload).encode("utf-8")
        async with self._send_lock:
            seq = self._next_seq()
            data = encode_frame(f"{name}-{seq}", seq, text)
            await self._blocking(self._write_snapshot, name, data, seq)

    def read_snapshot(self, name: str, *, own: bool = False) -> Snapshot | None:
        """The peer's newest complete snapshot ``name`` (``own``: this side's), or ``None``.

        Versions are read newest first; one that is incomplete (being copied in) is
        skipped in favour of the previous one. Blocks briefly (lists and reads a file).
        """
        folder = (self.outgoing if own else self.incoming).snap
        entries = []
        try:
            for e in os.scandir(folder):
                if (p := parse_snapshot_name(e.name)) is not None:
                    if p[0] == name:
                        entries.append(p[1])
                elif e.name.startswith(f"{name}.") and e.name not in self._skipped_snapshots:
                    # e.g. an unpadded seq from a peer that misread spec section 7: say so once
                    self._skipped_snapshots.add(e.name)
                    self._log.warning(
                        "file bridge: skipped %s in snap/ (not <name>.<20-digit seq>.fkb)", e.name
                    )
        except FileNotFoundError:
            return None
        for seq in sorted(entries, reverse=True):
            try:
                raw = self._read(folder / snapshot_name(name, seq))  # bounded: the peer writes it
                frame = decode_frame(raw, max_frame_bytes=self.max_frame_bytes)
            except (OSError, FrameError):
                continue
            data = frame.data
            body = data.get("body")
            if data.get("type") != "snapshot" or not isinstance(body, dict):
                continue
            sent_at = data.get("sent_at")
            return Snapshot(
                name,
                seq,
                str(data.get("sender", "")),
                float(sent_at) if isinstance(sent_at, (int, float)) else 0.0,
                body,
            )
        return None

    async def heartbeat(self) -> None:
        """Write the heartbeat snapshot now (the bridge also does it every interval)."""
        await self.write_snapshot(
            "heartbeat", {"instance": self.instance, "time": self._clock.time()}
        )

    async def _heartbeat_loop(self) -> None:
        assert self.heartbeat_interval
        while True:
            await self._clock.sleep(self.heartbeat_interval)
            try:
                await self.heartbeat()
            except OSError as exc:
                self._log.warning("heartbeat write failed: %s", exc)

    def peer_alive(self, max_age: float = 5.0) -> bool:
        """Whether the peer's newest heartbeat is less than ``max_age`` seconds old.

        A change of the peer's instance id (it restarted) is counted in
        ``stats.peer_restarts`` and logged.
        """
        snap = self.read_snapshot("heartbeat")
        if snap is None:
            return False
        instance = snap.body.get("instance")
        beat = snap.body.get("time")
        if isinstance(instance, str) and instance != self._peer_instance:
            if self._peer_instance is not None:
                self.stats.peer_restarts += 1
                self._log.warning("peer %s restarted (instance %s)", self.peer, instance)
            self._peer_instance = instance
        if not isinstance(beat, (int, float)) or not math.isfinite(beat):
            return False
        return self._clock.time() - float(beat) <= max_age

    @property
    def peer_instance(self) -> str | None:
        """The peer's instance id seen by the last :meth:`peer_alive` call."""
        return self._peer_instance

    # -- receiving ---------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[Message]:
        """Iterate incoming messages (when no ``handler`` was given).

        A message is acknowledged when you ask for the next one (or leave the loop).
        Answer a request with :meth:`reply` before that; otherwise it is answered
        ``failed``.
        """
        self._check_open()
        if self._handler is not None:
            raise ConfigError("handler", "messages() is for bridges without a handler", True)
        if self._iterating:
            raise ConfigError("messages", "only one iterator at a time", True)
        self._iterating = True
        done: asyncio.Future[Reply | None] | None = None
        try:
            while True:
                if done is not None and not done.done():
                    done.set_result(None)
                message, done = await self._inbox.get()
                yield message
        finally:
            if done is not None and not done.done():
                done.set_result(None)
            self._iterating = False

    def reply(self, message: Message, status: ReplyStatus | str, **details: Any) -> None:
        """Answer ``message`` (a request yielded by :meth:`messages`)."""
        fut = self._current.get(message.id)
        if fut is None or fut.done():
            raise ConfigError("message", "not the request currently being handled", message.id)
        fut.set_result(Reply(ReplyStatus(status), details))

    async def _deliver(self, message: Message) -> Reply | None:
        if self._handler is not None:
            return await self._handler(message)
        fut: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._current = {message.id: fut}
        self._handoff = "put"
        try:
            await self._inbox.put((message, fut))
            self._handoff = "wait"
            if self._closed:
                fut.cancel()
            return await fut
        finally:
            self._current = {}
            self._handoff = ""

    async def _wait_poll(self, interval: float) -> None:
        # A plain future and a timer: cheaper than wait_for() on an Event, and it
        # cannot swallow a cancellation that races with the timeout.
        if self._woken:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(interval, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._woken = False

    async def _reader_loop(self) -> None:
        try:
            await self._reconcile_cur()
        except Exception:
            self._log.exception("reconciling cur/ failed")
        interval = self.poll.busy
        idle_since = self._clock.monotonic()
        recheck_cur = False
        while not self._closed:
            try:
                if recheck_cur:
                    # A failed pass may have left a claimed file in cur/: take it up again.
                    recheck_cur = False
                    await self._reconcile_cur()
                progressed = await self._scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("file bridge reader pass failed; retrying")
                progressed = False
                recheck_cur = True
            now = self._clock.monotonic()
            if progressed:
                idle_since = now
                interval = self.poll.busy
            elif now < self._busy_until or now - idle_since < self.poll.busy_window:
                interval = self.poll.busy
            else:
                interval = min(self.poll.idle, interval * self.poll.backoff)
            if now - self._last_done_sweep > 10.0:
                self._last_done_sweep = now
                self._sweep_done()
            await self._wait_poll(interval)

    async def _watch_loop(self) -> None:
        try:
            import watchfiles
        except ImportError:
            self._log.error(
                "watch=True needs the 'watch' extra: pip install 'fokha-integration[watch]'"
            )
            return
        async for _ in watchfiles.awatch(self.incoming.new, debounce=1, step=1):
            self._mark_busy()

    def _sweep_done(self) -> None:
        if not self.keep_done:
            return
        cutoff = time.time() - self.done_retention
        for entry in os.scandir(self.incoming.done):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    def _read(self, path: str | Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            limit = self.max_frame_bytes + 1
            chunks = []
            size = 0
            while size < limit:
                chunk = os.read(fd, limit - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def _scan_once(self) -> bool:
        try:
            names = sorted(e.name for e in os.scandir(self._in_new) if parse_message_name(e.name))
        except FileNotFoundError:
            self.incoming.create()
            return False
        progressed = False
        for name in names:
            if self._closed:
                break
            path = os.path.join(self._in_new, name)
            try:
                data = self._read(path)
            except (FileNotFoundError, PermissionError):
                continue
            try:
                frame = decode_frame(data, max_frame_bytes=self.max_frame_bytes)
            except FrameError as exc:
                self._not_ready_yet(name, path, exc)
                continue
            self._not_ready.pop(name, None)
            if not self._wanted(frame):
                continue
            claimed = os.path.join(self._in_cur, name)
            try:
                os.replace(path, claimed)
            except (FileNotFoundError, PermissionError):
                continue
            await self._handle(claimed, name, frame)
            progressed = True
        if self._not_ready:
            present = set(names)
            for gone in [n for n in self._not_ready if n not in present]:
                del self._not_ready[gone]
        return progressed

    def _wanted(self, frame: Frame) -> bool:
        """Whether to take this frame now.

        Without a handler and with no :meth:`messages` loop running, nobody could take
        a message: it stays in ``new/`` (nothing is lost, and requests are not blocked
        behind it). Replies to this bridge's waiting requests, and duplicates of
        replies already handled, are always taken.
        """
        if self._handler is not None or self._iterating:
            return True
        data = frame.data
        if data.get("type") != "reply":
            return False
        in_reply_to = data.get("in_reply_to")
        if isinstance(in_reply_to, str) and in_reply_to in self._pending:
            return True
        entry = self._journal.get(frame.id)
        return entry is not None and entry.state == "done"

    def _not_ready_yet(self, name: str, path: str, exc: FrameError) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._not_ready.pop(name, None)
            return
        now = self._clock.monotonic()
        seen = self._not_ready.get(name)
        if seen is None or seen.size != st.st_size or seen.mtime_ns != st.st_mtime_ns:
            self._not_ready[name] = _NotReady(st.st_size, st.st_mtime_ns, now)
            return
        if now - seen.since >= self.grace:
            del self._not_ready[name]
            self._to_bad(path, name, exc.code, exc.detail)

    def _to_bad(self, path: str | Path, name: str, code: str, detail: str) -> None:
        try:
            move_file(path, self.incoming.bad / name)
        except FileNotFoundError:
            return
        reason = {"code": code, "detail": detail, "at": self._clock.time(), "reader": self.local}
        (self.incoming.bad / f"{name}.reason.json").write_text(
            json.dumps(reason, sort_keys=True), encoding="utf-8"
        )
        self.stats.bad += 1
        self._log.warning("file bridge: moved %s to bad/ (%s: %s)", name, code, detail)

    async def _reconcile_cur(self) -> None:
        """Start-up: process what a previous run claimed and did not acknowledge."""
        for name in sorted(os.listdir(self.incoming.cur)):
            if parse_message_name(name) is None:
                continue
            path = self.incoming.cur / name
            if (self.incoming.new / name).exists():
                # An interrupted non-atomic claim: new/ holds the original.
                path.unlink(missing_ok=True)
                continue
            try:
                frame = decode_frame(self._read(path), max_frame_bytes=self.max_frame_bytes)
            except FrameError as exc:
                code = "incomplete" if isinstance(exc, IncompleteFrameError) else exc.code
                self._to_bad(path, name, code, exc.detail)
                continue
            self.stats.reconciled_cur += 1
            await self._handle(path, name, frame)

    def _parse(self, name: str, frame: Frame) -> Message:
        parsed = parse_message_name(name)
        assert parsed is not None
        if parsed.id != frame.id or parsed.seq != frame.seq:
            raise CorruptFrameError("name_mismatch", "header id/seq differ from the file name")
        d = frame.data
        type_, kind, sender, sent_at, body = (
            d.get("type"),
            d.get("kind"),
            d.get("sender"),
            d.get("sent_at"),
            d.get("body"),
        )
        if type_ not in _TYPES:
            raise CorruptFrameError("bad_message", f"type {type_!r}")
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise CorruptFrameError("bad_message", "kind")
        if not valid_sender(sender):
            raise CorruptFrameError("bad_message", "sender")
        if sender != parsed.sender:
            raise CorruptFrameError("name_mismatch", "sender differs from the file name")
        if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)):
            raise CorruptFrameError("bad_message", "sent_at")
        if not isinstance(body, dict):
            raise CorruptFrameError("bad_message", "body")
        status = None
        in_reply_to = None
        details: dict[str, Any] = {}
        if type_ == "reply":
            in_reply_to = d.get("in_reply_to")
            if not valid_id(in_reply_to):
                raise CorruptFrameError("bad_message", "in_reply_to")
            try:
                status = ReplyStatus(d.get("status"))
            except ValueError:
                raise CorruptFrameError("bad_message", "status") from None
            raw_details = d.get("details", {})
            if not isinstance(raw_details, dict):
                raise CorruptFrameError("bad_message", "details")
            details = raw_details
        assert isinstance(type_, str)
        assert isinstance(sender, str)
        return Message(
            frame.id,
            type_,
            kind,
            body,
            sender,
            float(sent_at),
            frame.seq,
            in_reply_to if isinstance(in_reply_to, str) else None,
            status,
            details,
        )

    def _ack(self, path: str | Path, name: str) -> None:
        if self.keep_done:
            with contextlib.suppress(FileNotFoundError):
                move_file(path, self.incoming.done / name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _handle(self, path: str | Path, name: str, frame: Frame) -> None:
        try:
            message = self._parse(name, frame)
        except CorruptFrameError as exc:
            self._to_bad(path, name, exc.code, exc.detail)
            return
        self.stats.received += 1
        entry = self._journal.get(message.id)
        if message.type == "reply":
            self.stats.replies_received += 1
            assert message.in_reply_to is not None
            assert message.status is not None
            reply = Reply(
                message.status,
                message.details,
                message.id,
                message.in_reply_to,
                message.sender,
                message.sent_at,
            )
            pending = self._pending.get(message.in_reply_to)
            # A duplicate reply still completes a waiting request (the waiter may be a
            # resend after a restart), but reaches the application only once.
            if pending is not None:
                # An interim "accepted" while the waiter wants the final reply is
                # consumed here: the waiter keeps waiting for the final one.
                if (message.status.final or not pending.final) and not pending.future.done():
                    pending.future.set_result(reply)
                if entry is None or entry.state != "done":
                    await self._blocking(
                        self._journal.done, message.id, self._clock.time(), None, None
                    )
                await self._blocking(self._ack, path, name)
                return
        if entry is not None and entry.state == "done":
            self.stats.duplicates += 1
            if message.is_request and entry.reply is not None and entry.reply_id is not None:
                await self._send_stored_reply(entry.reply_id, entry.reply)
            await self._blocking(self._ack, path, name)
            return
        if entry is None:
            await self._blocking(self._journal.begin, message.id, self._clock.time())
        else:
            self.stats.redelivered += 1
            message = _replace_redelivered(message)
        reply_id: str | None = None
        reply_text: str | None = None
        try:
            result = await self._deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.handler_errors += 1
            self._log.exception("handler failed on %s (%s)", message.id, message.kind)
            if not message.is_request:
                self._to_bad(path, name, "handler_error", repr(exc)[:500])
                return
            result = Reply(ReplyStatus.FAILED, {"message": f"handler error: {exc!r}"[:500]})
        if message.is_request:
            if result is None:
                result = Reply(ReplyStatus.FAILED, {"message": "the handler gave no reply"})
            reply_id = new_id()
            reply_text = canonical_json(
                {
                    "type": "reply",
                    "kind": message.kind,
                    "sender": self.sender,
                    "sent_at": round(self._clock.time(), 6),
                    "body": {},
                    "in_reply_to": message.id,
                    "status": ReplyStatus(result.status).value,
                    "details": dict(result.details),
                }
            )
        await self._blocking(
            self._journal.done, message.id, self._clock.time(), reply_id, reply_text
        )
        if reply_id is not None and reply_text is not None:
            await self._send_stored_reply(reply_id, reply_text)
        await self._blocking(self._ack, path, name)

    async def _send_stored_reply(self, reply_id: str, reply_text: str) -> None:
        body = reply_text.encode("utf-8")
        async with self._send_lock:
            seq = self._next_seq()
            name = message_name(seq, self.sender, reply_id)
            await self._blocking(
                self._publish, name, encode_frame(reply_id, seq, body), self._out_new
            )
        self.stats.replies_sent += 1


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _replace_redelivered(message: Message) -> Message:
    return Message(
        message.id,
        message.type,
        message.kind,
        message.body,
        message.sender,
        message.sent_at,
        message.seq,
        message.in_reply_to,
        message.status,
        message.details,
        True,
    )
