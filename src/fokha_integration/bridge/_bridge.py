"""The asyncio file bridge: messages, requests with replies, snapshots, heartbeat.

:class:`FileBridge` implements protocol v1 (``docs/protocols/file-bridge.md``) over a
root folder shared with a MetaTrader 5 EA (or any peer that follows the spec). It is
a thin facade over four parts: the :class:`~._writer.Writer` (frames out), the
:class:`~._reader.Reader` (files in), the sans-I/O :class:`~._receiver.Receiver`
(the exactly-once decisions) and the :class:`~._journal.Journal` (processed ids).
File operations block; they are short (one small file each) and run inline, except
with ``durability="fsync"`` where the fsyncs run in a worker thread.

It is not a general message broker: one consumer per incoming folder, one process per
``sender`` name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from .. import _validate as check
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ClosedError, ConfigError, FokhaError, OperationTimeoutError
from ..models import new_id
from ._folders import BadFolder, DirectionPaths, Durability, valid_sender, valid_snapshot_name
from ._frame import MAX_FRAME_BYTES, valid_id
from ._journal import Journal
from ._reader import Reader
from ._receiver import Receiver
from ._types import (
    BridgeStats,
    Counters,
    Handler,
    Message,
    PendingRequests,
    PollConfig,
    Reply,
    ReplyStatus,
    Snapshot,
)
from ._writer import Writer

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
        check.string("encoding", encoding)
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise ConfigError("encoding", "protocol v1 frames are UTF-8 only", encoding)
        check.one_of("durability", durability, ("none", "flush", "fsync"))
        for name, value in (("local", local), ("peer", peer)):
            if not valid_sender(value):
                raise ConfigError(name, "must be 1..32 of [A-Za-z0-9_]", value)
        self.sender = local if sender is None else sender
        if not valid_sender(self.sender):
            raise ConfigError("sender", "must be 1..32 of [A-Za-z0-9_]", sender)
        if poll is not None and not isinstance(poll, PollConfig):
            raise ConfigError("poll", "must be a PollConfig", poll)
        if handler is not None and not callable(handler):
            raise ConfigError("handler", "must be an async callable", handler)
        self.root = Path(root)
        self.local = local
        self.peer = peer
        self.durability: Durability = durability
        self.poll = poll or PollConfig()
        self.grace = check.non_negative("grace", grace)
        self.max_frame_bytes = check.integer(
            "max_frame_bytes", max_frame_bytes, minimum=256, maximum=64 << 20
        )
        self.keep_done = check.boolean("keep_done", keep_done)
        self.done_retention = check.non_negative("done_retention", done_retention)
        journal_retention = check.positive("journal_retention", journal_retention)
        journal_max_entries = check.integer("journal_max_entries", journal_max_entries, minimum=1)
        self.heartbeat_interval = check.optional_number(
            "heartbeat_interval", heartbeat_interval, exclusive_minimum=0.0
        )
        self._receive = check.boolean("receive", receive)
        self._watch = check.boolean("watch", watch)
        self.close_timeout = check.non_negative("close_timeout", close_timeout)
        self.outgoing = DirectionPaths(self.root / f"{local}2{peer}")
        self.incoming = DirectionPaths(self.root / f"{peer}2{local}")
        self.instance = new_id()
        self._handler = handler
        self._clock = clock
        self._log = logger or logging.getLogger("fokha_integration.bridge")
        self._stats = Counters()
        self._pending = PendingRequests()
        bad = BadFolder(local, clock.time, self._log, self._count_bad, self._count_stuck)
        self._writer = Writer(
            self.outgoing,
            sender=self.sender,
            durability=durability,
            max_frame_bytes=self.max_frame_bytes,
            clock=clock,
            counters=self._stats,
            bad=bad,
        )
        self._journal = Journal(
            self.root / "state" / f"{local}.journal",
            durability=durability,
            retention=journal_retention,
            max_entries=journal_max_entries,
        )
        self._reader = Reader(
            self.incoming,
            journal=self._journal,
            receiver=Receiver(self.sender, self._stats),
            writer=self._writer,
            pending=self._pending,
            bad=bad,
            deliver=self._deliver,
            has_consumer=self._has_consumer,
            poll=self.poll,
            durability=durability,
            grace=self.grace,
            max_frame_bytes=self.max_frame_bytes,
            keep_done=self.keep_done,
            done_retention=self.done_retention,
            clock=clock,
            log=self._log,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._reader_task: asyncio.Task[None] | None = None
        # Hand-off to a messages() consumer: one message at a time, and the future its
        # reply (or the next iteration) resolves.
        self._inbox: asyncio.Queue[tuple[Message, asyncio.Future[Reply | None]]] = asyncio.Queue(
            maxsize=1
        )
        self._iterating = False
        self._handoff = ""
        self._current: dict[str, asyncio.Future[Reply | None]] = {}
        self._started = False
        self._closed = False
        self._peer_instance: str | None = None

    def _count_bad(self) -> None:
        self._stats.bad += 1

    def _count_stuck(self) -> None:
        self._stats.stuck += 1

    def stats(self) -> BridgeStats:
        """A frozen snapshot of this bridge's counters."""
        return self._stats.snapshot(self._reader.waiting)

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
        self._writer.recover(self._log.info)
        if self._receive:
            await self._blocking_open()
            self._reader_task = asyncio.create_task(self._reader.run(), name="bridge-reader")
            self._tasks.append(self._reader_task)
            if self._watch:
                self._tasks.append(asyncio.create_task(self._reader.watch(), name="bridge-watch"))
        if self.heartbeat_interval:
            await self.heartbeat()
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="bridge-beat"))

    async def _blocking_open(self) -> None:
        if self.durability == "fsync":
            await asyncio.to_thread(self._journal.open, self._clock.time())
        else:
            self._journal.open(self._clock.time())

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
            self._reader.stop()
            await asyncio.wait({reader}, timeout=self.close_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._pending.fail_all(ClosedError("the file bridge was closed"))
        self._journal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the file bridge is closed")
        if not self._started:
            raise ClosedError("the file bridge is not started (use 'async with' or start())")

    # -- sending -----------------------------------------------------------------------

    async def send(self, kind: str, body: Mapping[str, Any], *, id: str | None = None) -> str:
        """Send a one-way message; returns its id (given, or a new sortable one).

        On a full disk it raises :class:`~fokha_integration.errors.BackendUnavailableError`
        and nothing was sent (no partial file is left); repeating it with the same
        ``id`` is safe.
        """
        self._check_open()
        msg_id = id or new_id()
        if not valid_id(msg_id):
            raise ConfigError("id", "must be 1..64 of [A-Za-z0-9_-]", msg_id)
        await self._writer.send(msg_id, self._writer.payload("message", kind, body))
        self._stats.sent += 1
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
        check.positive("timeout", timeout)
        check.optional_number("resend_after", resend_after, exclusive_minimum=0.0)
        check.boolean("final", final)
        payload = self._writer.payload("request", kind, body)
        future = self._pending.wait_for(msg_id, final)
        deadline = self._clock.monotonic() + timeout
        first = True
        try:
            while True:
                await self._writer.send(msg_id, payload)
                if first:
                    self._stats.sent += 1
                    first = False
                else:
                    self._stats.resent += 1
                self._reader.mark_busy()
                remaining = deadline - self._clock.monotonic()
                wait = remaining if resend_after is None else min(resend_after, remaining)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), max(0.0, wait))
                except asyncio.TimeoutError:
                    if self._clock.monotonic() >= deadline:
                        raise OperationTimeoutError(f"request {msg_id}", timeout) from None
        finally:
            self._pending.forget(msg_id, future)

    # -- snapshots and heartbeat -------------------------------------------------------

    async def write_snapshot(self, name: str, body: Mapping[str, Any]) -> None:
        """Publish the latest value ``body`` under ``name`` (atomic for readers)."""
        self._check_open()
        if not valid_snapshot_name(name):
            raise ConfigError("name", "must be 1..32 of [a-z0-9_]", name)
        await self._writer.write_snapshot(name, body)

    def read_snapshot(self, name: str, *, own: bool = False) -> Snapshot | None:
        """The peer's newest complete snapshot ``name`` (``own``: this side's), or ``None``.

        Versions are read newest first; one that is incomplete (being copied in) is
        skipped in favour of the previous one. Blocks briefly (lists and reads a file).
        """
        paths = self.outgoing if own else self.incoming
        return self._reader.read_snapshot(paths.snap, paths.bad, name)

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
            except (OSError, FokhaError) as exc:
                self._log.warning("heartbeat write failed: %s", exc)

    def peer_alive(self, max_age: float = 5.0) -> bool:
        """Whether the peer's newest heartbeat is less than ``max_age`` seconds old.

        A change of the peer's instance id (it restarted) is counted in
        ``stats().peer_restarts`` and logged.
        """
        snap = self.read_snapshot("heartbeat")
        if snap is None:
            return False
        instance = snap.body.get("instance")
        beat = snap.body.get("time")
        if isinstance(instance, str) and instance != self._peer_instance:
            if self._peer_instance is not None:
                self._stats.peer_restarts += 1
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

    def _has_consumer(self) -> bool:
        return self._handler is not None or self._iterating

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
