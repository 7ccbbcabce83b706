"""Fan-out on one node: fast broadcast sets, slow-client conflation and gaps, flushing.

:class:`Fanout` is the part of the WebSocket server that gets each message to every
subscribed connection without ever waiting for one:

* every message is serialised once (``Message.frame``), by the broker's delivery;
* each channel keeps the set of its *fast* connections, written with
  :func:`websockets.asyncio.server.broadcast` - the same cheap path as a raw
  broadcast;
* a connection whose transport write buffer passes the high watermark
  (``pause_writing``) leaves the fast sets and gets per-connection pending state
  (:class:`Conn`): for ``latest`` subscriptions only the newest message per channel
  (memory bounded by its channel count), for ``all`` subscriptions a bounded queue
  that turns into a ``gap`` marker on overflow. A per-connection task waits for the
  buffer to drain below the low watermark, flushes the pending state and puts the
  connection back on the fast path; if the buffer stays above the high watermark for
  longer than ``SlowClientPolicy.grace`` it closes the connection with 4001.

It is not the protocol (``_protocol.Session``) and not the connection handling,
authentication or recovery (``_server.WebSocketServer``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .. import _validate
from ..errors import ConfigError
from ._auth import Principal
from ._channels import Message, conflated_frame, gap_frame
from ._protocol import CloseCode, Mode, Position, Session

__all__ = ["Conn", "Counters", "Fanout", "SlowClientPolicy"]

_ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True, slots=True)
class SlowClientPolicy:
    """When a client counts as slow and what happens then.

    ``high_watermark``/``low_watermark``: transport write-buffer bytes above which a
    connection leaves the fast path and below which it is flushed and returns.
    ``queue_size``: messages kept per ``all`` channel while slow before a gap marker;
    ``max_pending``: messages kept per connection over all its channels.
    ``grace``: seconds a connection may stay above the high watermark before it is
    closed with 4001. ``send_buffer``: when set, the kernel send buffer (``SO_SNDBUF``)
    of each connection is fixed to this many bytes; otherwise the kernel may grow it
    to several MB per stalled client before the watermarks even see it.
    """

    high_watermark: int = 256 * 1024
    low_watermark: int = 32 * 1024
    queue_size: int = 500
    max_pending: int = 5000
    grace: float = 10.0
    send_buffer: int | None = None

    def __post_init__(self) -> None:
        _validate.integer("high_watermark", self.high_watermark, minimum=1)
        _validate.integer("low_watermark", self.low_watermark, minimum=0)
        if self.low_watermark >= self.high_watermark:
            raise ConfigError("low_watermark", "must be < high_watermark", self.low_watermark)
        _validate.integer("queue_size", self.queue_size, minimum=1)
        _validate.integer("max_pending", self.max_pending, minimum=1)
        _validate.positive("grace", self.grace)
        if self.send_buffer is not None:
            _validate.integer("send_buffer", self.send_buffer, minimum=1)


@dataclass
class Counters:
    """The server's running totals (mutable; ``WebSocketServer.metrics`` snapshots them)."""

    messages_published: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    conflated: int = 0
    dropped: int = 0
    gaps: int = 0
    slow_disconnects: int = 0
    slow_events: int = 0
    recovery_hits: int = 0
    recovery_misses: int = 0
    auth_failures: int = 0
    errors_sent: int = 0
    rejected_connections: int = 0


class _Conflated:
    """Pending state of a ``latest`` channel: the newest message and the first seq skipped."""

    __slots__ = ("first", "message")

    def __init__(self, message: Message) -> None:
        self.first = message.seq
        self.message = message


@dataclass
class _Gap:
    epoch: str
    first: int
    last: int


class _ChannelSubscribers:
    """One channel's subscribers on this node."""

    __slots__ = ("fast", "last_publish", "queued")

    def __init__(self) -> None:
        self.fast: set[ServerConnection] = set()
        self.queued: set[Conn] = set()
        self.last_publish = 0.0


class Conn:
    """Per-connection state next to the websockets connection.

    ``pending`` holds what a slow (or still synchronising) connection has not been
    sent yet; :meth:`enqueue`, :meth:`trim_pending` and :meth:`take_pending` keep it
    bounded by the fan-out's :class:`SlowClientPolicy`.
    """

    def __init__(self, fanout: Fanout, ws: ServerConnection, session: Session) -> None:
        self.fanout = fanout
        self.ws = ws
        self.session = session
        self.id = secrets.token_hex(6)
        self.principal = _ANONYMOUS
        self.modes: dict[str, Mode] = {}
        self.syncing: dict[str, int] = {}
        self.slow = False
        self.closing = False
        self.pending: dict[str, _Conflated | deque[Message | _Gap]] = {}
        self.pending_count = 0
        self.flusher: asyncio.Task[None] | None = None
        self.last_sent = time.monotonic()
        self.close_code: int | None = None

    def stats(self) -> dict[str, Any]:
        """Details for ``WebSocketServer.connection_stats`` (a plain dict per connection)."""
        transport = self.ws.transport
        return {
            "id": self.id,
            "user": self.principal.subject,
            "channels": sorted(self.modes),
            "slow": self.slow,
            "pending": self.pending_count,
            "write_buffer": transport.get_write_buffer_size() if transport else 0,
        }

    def enqueue(self, msg: Message) -> None:
        """Keep ``msg`` for later (conflated, queued or turned into a gap marker)."""
        mode = self.modes.get(msg.channel)
        if mode is None:
            return
        counters = self.fanout.counters
        entry = self.pending.get(msg.channel)
        if mode is Mode.LATEST:
            if isinstance(entry, _Conflated):
                entry.message = msg
                counters.conflated += 1
            else:
                self.pending[msg.channel] = _Conflated(msg)
                self.pending_count += 1
            return
        if not isinstance(entry, deque):
            entry = self.pending[msg.channel] = deque()
        policy = self.fanout.policy
        if len(entry) >= policy.queue_size or self.pending_count >= policy.max_pending:
            # Overflow: everything queued for this channel becomes one gap marker.
            first = msg.seq
            dropped = 0
            for item in entry:
                if isinstance(item, _Gap):
                    first = min(first, item.first)
                else:
                    first = min(first, item.seq)
                    dropped += 1
            self.pending_count -= len(entry)
            entry.clear()
            entry.append(_Gap(msg.epoch, first, msg.seq))
            self.pending_count += 1
            counters.dropped += dropped + 1
            counters.gaps += 1
            return
        entry.append(msg)
        self.pending_count += 1

    def drop_pending(self, channel: str) -> None:
        """Forget everything pending for ``channel``."""
        old = self.pending.pop(channel, None)
        if old is not None:
            self.pending_count -= 1 if isinstance(old, _Conflated) else len(old)

    def trim_pending(self, channel: str, after: int) -> None:
        """Forget pending messages of ``channel`` with seq <= ``after`` (already sent)."""
        entry = self.pending.get(channel)
        if isinstance(entry, _Conflated):
            if entry.message.seq <= after:
                del self.pending[channel]
                self.pending_count -= 1
            else:
                entry.first = max(entry.first, after + 1)
        elif entry is not None:
            kept: deque[Message | _Gap] = deque()
            for item in entry:
                if isinstance(item, _Gap):
                    if item.last > after:
                        kept.append(_Gap(item.epoch, max(item.first, after + 1), item.last))
                elif item.seq > after:
                    kept.append(item)
            self.pending_count -= len(entry) - len(kept)
            if kept:
                self.pending[channel] = kept
            else:
                del self.pending[channel]

    def take_pending(self, channel: str, after: int) -> list[bytes]:
        """The frames to send for ``channel``'s pending state, dropping seqs <= ``after``."""
        entry = self.pending.pop(channel, None)
        if entry is None:
            return []
        sent = time.time()
        if isinstance(entry, _Conflated):
            self.pending_count -= 1
            msg = entry.message
            if msg.seq <= after:
                return []
            first = max(entry.first, after + 1)
            if first >= msg.seq:
                return [msg.frame]
            return [conflated_frame(msg, first, sent)]
        self.pending_count -= len(entry)
        frames: list[bytes] = []
        for item in entry:
            if isinstance(item, _Gap):
                if item.last > after:
                    frames.append(
                        gap_frame(channel, item.epoch, max(item.first, after + 1), item.last, sent)
                    )
            elif item.seq > after:
                frames.append(item.frame)
        return frames


def _paused(ws: ServerConnection) -> bool:
    # A call, not an attribute read: writes in between change it (mypy would narrow it).
    return bool(ws.paused)


class Fanout:
    """Every channel's subscribers on this node and the slow-client machinery.

    :meth:`deliver` never waits. A connection enters a channel parked
    (:meth:`park`: live messages queue behind its recovery) and joins the fast set at
    :meth:`end_sync`. ``counters`` is shared with the server.
    """

    def __init__(self, policy: SlowClientPolicy, counters: Counters, log: logging.Logger) -> None:
        self.policy = policy
        self.counters = counters
        self.log = log
        self.latest: dict[str, Position] = {}
        self._channels: dict[str, _ChannelSubscribers] = {}
        self._slow_pending: list[Conn] = []
        self._transition_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- tasks

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task that :meth:`cancel_tasks` cancels."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        """Cancel every task started with :meth:`spawn` (at server close)."""
        for task in list(self._tasks):
            task.cancel()

    # -- delivery

    def deliver(self, msg: Message) -> None:
        """Fan one message out on this node; never waits (called by the broker)."""
        self.latest[msg.channel] = msg.position
        self.counters.messages_published += 1
        if self._slow_pending:
            self._apply_transitions()
        subs = self._channels.get(msg.channel)
        if subs is None:
            return
        subs.last_publish = time.monotonic()
        fast = subs.fast
        if fast:
            broadcast(fast, msg.frame, text=True)
            n = len(fast)
            self.counters.messages_sent += n
            self.counters.bytes_sent += n * len(msg.frame)
        for conn in subs.queued:
            conn.enqueue(msg)
        if self._slow_pending:
            self._apply_transitions()

    def write(self, conn: Conn, frame: bytes | str) -> None:
        """Write without waiting (the connection's own buffer absorbs it)."""
        broadcast((conn.ws,), frame, text=True)
        self.counters.messages_sent += 1
        self.counters.bytes_sent += len(frame)
        conn.last_sent = time.monotonic()

    def last_activity(self, conn: Conn) -> float:
        """The latest of the connection's last send and its channels' last publish."""
        busy = conn.last_sent
        for ch in conn.modes:
            subs = self._channels.get(ch)
            if subs is not None and subs.last_publish > busy:
                busy = subs.last_publish
        return busy

    # -- subscriptions

    def park(self, conn: Conn, channel: str) -> None:
        """Queue live messages of ``channel`` for ``conn`` until :meth:`end_sync`."""
        conn.drop_pending(channel)
        conn.syncing[channel] = conn.syncing.get(channel, 0) + 1
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = _ChannelSubscribers()
        subs.fast.discard(conn.ws)
        subs.queued.add(conn)

    def end_sync(self, conn: Conn, channel: str, last: int) -> None:
        """The recovery of ``channel`` was sent up to ``last``: flush what queued, go fast."""
        left = conn.syncing.get(channel, 0) - 1
        if left > 0:
            conn.syncing[channel] = left
            return
        conn.syncing.pop(channel, None)
        if channel not in conn.modes or conn.closing:
            return
        if not conn.slow:
            # Flush what arrived during the sync (seq > last), then go fast.
            for frame in conn.take_pending(channel, last):
                self.write(conn, frame)
            subs = self._channels.get(channel)
            if subs is not None and not conn.slow:
                subs.queued.discard(conn)
                subs.fast.add(conn.ws)
        else:
            conn.trim_pending(channel, last)
            self._kick(conn)

    def unsubscribe(self, conn: Conn, channels: Iterable[str]) -> None:
        """Take ``conn`` off ``channels``."""
        for ch in channels:
            conn.modes.pop(ch, None)
            conn.drop_pending(ch)
            self._leave(conn, ch)

    def detach(self, conn: Conn) -> None:
        """The connection is gone: off every channel, pending state and flusher dropped."""
        conn.closing = True
        for ch in conn.modes:
            self._leave(conn, ch)
        conn.pending.clear()
        conn.pending_count = 0
        if conn.flusher is not None and conn.flusher is not asyncio.current_task():
            conn.flusher.cancel()

    def _leave(self, conn: Conn, channel: str) -> None:
        subs = self._channels.get(channel)
        if subs is not None:
            subs.fast.discard(conn.ws)
            subs.queued.discard(conn)
            if not subs.fast and not subs.queued:
                del self._channels[channel]

    # -- slow clients

    def became_slow(self, conn: Conn) -> None:
        """The connection's write buffer passed the high watermark."""
        # Called from inside transport.write(): do not touch the fast sets now (the
        # broadcast may be iterating over one); apply after it or on the next turn.
        self._slow_pending.append(conn)
        if not self._transition_scheduled:
            self._transition_scheduled = True
            asyncio.get_running_loop().call_soon(self._apply_transitions)

    def _apply_transitions(self) -> None:
        self._transition_scheduled = False
        pending, self._slow_pending = self._slow_pending, []
        for conn in pending:
            if conn.slow or conn.closing:
                continue
            conn.slow = True
            self.counters.slow_events += 1
            for ch in conn.modes:
                subs = self._channels.get(ch)
                if subs is not None:
                    subs.fast.discard(conn.ws)
                    subs.queued.add(conn)
            self._kick(conn)

    def _kick(self, conn: Conn) -> None:
        if conn.flusher is None or conn.flusher.done():
            conn.flusher = self.spawn(self._flush(conn))

    async def _flush(self, conn: Conn) -> None:
        """Wait for the buffer to drain, flush pending state, return to the fast path."""
        ws = conn.ws
        try:
            while not conn.closing:
                if _paused(ws):
                    try:
                        await asyncio.wait_for(ws.drain(), self.policy.grace)
                    except asyncio.TimeoutError:
                        await self._close_slow(conn)
                        return
                    continue
                for channel in list(conn.pending):
                    if channel in conn.syncing:
                        continue
                    for frame in conn.take_pending(channel, 0):
                        self.write(conn, frame)
                    if _paused(ws):
                        break
                if _paused(ws):
                    continue
                if any(ch not in conn.syncing for ch in conn.pending):
                    continue
                # Caught up: back on the fast path for every channel not syncing.
                conn.slow = False
                for ch in conn.modes:
                    if ch in conn.syncing:
                        continue
                    subs = self._channels.get(ch)
                    if subs is not None:
                        subs.queued.discard(conn)
                        subs.fast.add(ws)
                return
        except (ConnectionClosed, ConnectionError, OSError):
            # The peer went away while we waited for its buffer; the handler cleans up.
            return

    async def _close_slow(self, conn: Conn) -> None:
        self.log.warning("closing slow connection %s (over the high watermark)", conn.id)
        self.counters.slow_disconnects += 1
        conn.close_code = int(CloseCode.SLOW_CONSUMER)
        self.detach(conn)
        await conn.ws.close(CloseCode.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER.reason)
