"""``WebSocketServer``: channels with recovery, slow-client conflation, auth and limits.

The server is a thin asyncio layer over the sans-I/O :class:`~._protocol.Session`
(one per connection) and a :class:`~.brokers.Broker` (sequence numbers, history,
fan-out across nodes). It runs on the ``websockets`` asyncio implementation.

Fan-out (``_deliver``) is synchronous and never waits for a client:

* every message is serialised once (``Message.frame``), by the broker's delivery;
* each channel keeps the set of its *fast* connections, written with
  :func:`websockets.asyncio.server.broadcast` - the same cheap path as a raw
  broadcast;
* a connection whose transport write buffer passes the high watermark
  (``pause_writing``) leaves the fast sets and gets per-connection pending state:
  for ``latest`` subscriptions only the newest message per channel (memory bounded
  by its channel count), for ``all`` subscriptions a bounded queue that turns into a
  ``gap`` marker on overflow. A per-connection task waits for the buffer to drain
  below the low watermark, flushes the pending state and puts the connection back
  on the fast path; if the buffer stays above the high watermark for longer than
  ``SlowClientPolicy.grace`` it closes the connection with 4001 (slow consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from .._version import __version__
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ClosedError
from ..models import Model
from ._auth import Authenticator, AuthError, Authorizer, Principal, token_channels
from ._channels import Message, Recovery, conflated_frame, gap_frame, snapshot_frame
from ._protocol import (
    Action,
    Close,
    CloseCode,
    ErrorCode,
    HelloRequest,
    Limits,
    Mode,
    Position,
    PublishRequest,
    Send,
    Session,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribeRequest,
    dumps,
    validate_channel,
)
from .brokers import Broker, LocalBroker

__all__ = ["SlowClientPolicy", "WebSocketMetrics", "WebSocketServer"]

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
        if not 0 <= self.low_watermark < self.high_watermark:
            raise ValueError("need 0 <= low_watermark < high_watermark")
        if self.queue_size < 1 or self.max_pending < 1 or self.grace <= 0:
            raise ValueError("queue_size, max_pending and grace must be positive")


@dataclass(frozen=True, slots=True)
class WebSocketMetrics:
    """A snapshot of the server's counters (``connections``/``subscriptions``/``slow_clients``
    are current values, the rest totals since start; ``slow_events`` counts how often a
    connection went over the high watermark)."""

    connections: int
    subscriptions: int
    slow_clients: int
    messages_published: int
    messages_sent: int
    bytes_sent: int
    conflated: int
    dropped: int
    gaps: int
    slow_disconnects: int
    slow_events: int
    recovery_hits: int
    recovery_misses: int
    auth_failures: int
    errors_sent: int
    rejected_connections: int


@dataclass
class _Counters:
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


class _Fanout:
    """One channel's subscribers on this node."""

    __slots__ = ("fast", "last_publish", "queued")

    def __init__(self) -> None:
        self.fast: set[ServerConnection] = set()
        self.queued: set[_Conn] = set()
        self.last_publish = 0.0


class _Connection(ServerConnection):
    """A websockets connection that tells us when its write buffer crosses the watermarks."""

    fokha: _Conn | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.fokha is not None:
            self.fokha.server._became_slow(self.fokha)


class _Conn:
    """Our per-connection state next to the websockets connection."""

    def __init__(self, server: WebSocketServer, ws: ServerConnection, session: Session) -> None:
        self.server = server
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

    # -- slow path (called synchronously from the fan-out)

    def enqueue(self, msg: Message) -> None:
        mode = self.modes.get(msg.channel)
        if mode is None:
            return
        counters = self.server._counters
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
        policy = self.server.slow_policy
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
    """Whether the connection's write buffer is above the high watermark."""
    return bool(ws.paused)


def _wall_positions(
    latest: dict[str, Position], channels: Sequence[str]
) -> dict[str, Position | None]:
    return {ch: latest.get(ch) for ch in channels}


class WebSocketServer:
    """A WebSocket server of named channels (protocol v1, ``docs/protocols/websocket.md``).

    ``await server.publish(channel, data)`` numbers the message (per-channel
    ``seq`` within an ``epoch``), stores it in the broker's bounded history and
    sends it to every subscriber. Subscribers get the latest value at once on
    subscribe, and exactly what they missed (or a snapshot with ``recovered=false``)
    when they resubscribe with ``since``.

    Keyword arguments:

    * ``host``/``port``: where to listen (``127.0.0.1``, ``0`` = any free port).
    * ``broker``: a :class:`~fokha_integration.ws.brokers.Broker`; default
      :class:`~fokha_integration.ws.brokers.LocalBroker` (in-process). The server
      starts and closes it.
    * ``authenticator``: checks the hello token (e.g. :class:`TokenAuthenticator`);
      ``None`` means no authentication and ``hello`` is optional.
    * ``authorize``: ``(principal, channel, action) -> bool`` (may be async); the
      default allows the channel patterns in the token.
    * ``allow_publish``: whether clients may publish (still subject to ``authorize``).
    * ``limits``: :class:`Limits` (frame size, channels per connection, inbound
      rate, hello timeout, connections).
    * ``slow``: :class:`SlowClientPolicy`.
    * ``conflate``: channel patterns (``fnmatch``) whose subscriptions default to
      ``latest`` mode when the client does not say; others default to ``all``.
    * ``heartbeat``: seconds of idleness after which a connection gets a heartbeat.
    * ``compression``: ``None`` (off, the default) or ``"deflate"``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        broker: Broker | None = None,
        authenticator: Authenticator | None = None,
        authorize: Authorizer = token_channels,
        allow_publish: bool = False,
        limits: Limits | None = None,
        slow: SlowClientPolicy | None = None,
        conflate: Sequence[str] = ("prices.*",),
        heartbeat: float = 15.0,
        compression: str | None = None,
        close_timeout: float = 5.0,
        op_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
        name: str = f"fokha/{__version__}",
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        self.host = host
        self._port = port
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.authenticator = authenticator
        self.authorize = authorize
        self.allow_publish = allow_publish
        self.limits = limits or Limits()
        self.slow_policy = slow or SlowClientPolicy()
        self.conflate = tuple(conflate)
        self.heartbeat_interval = heartbeat
        self.compression = compression
        self.close_timeout = close_timeout
        self.op_timeout = op_timeout
        self.clock = clock
        self.log = logger or logging.getLogger("fokha_integration.ws.server")
        self.name = name
        self._server: Server | None = None
        self._conns: set[_Conn] = set()
        self._fanouts: dict[str, _Fanout] = {}
        self._latest: dict[str, Position] = {}
        self._counters = _Counters()
        self._slow_pending: list[_Conn] = []
        self._transition_scheduled = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._all_gone = asyncio.Event()

    # -- lifecycle

    async def start(self) -> WebSocketServer:
        """Start the broker and listen; returns ``self``."""
        if self._server is not None:
            return self
        await self.broker.start(self._deliver)
        self._server = await serve(
            self._handler,
            self.host,
            self._port,
            compression=self.compression,
            max_size=self.limits.max_frame_bytes,
            write_limit=(self.slow_policy.high_watermark, self.slow_policy.low_watermark),
            close_timeout=self.close_timeout,
            create_connection=_Connection,
            logger=self.log,
        )
        self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeats())
        return self

    @property
    def serving(self) -> bool:
        """Whether the server is started and accepting connections."""
        return self._server is not None and self._server.is_serving()

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("server not started")
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port/`` of the running server."""
        return f"ws://{self.host}:{self.port}/"

    async def __aenter__(self) -> WebSocketServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, *, drain: float = 0.0, retry_after: float = 1.0) -> None:
        """Stop the server.

        With ``drain > 0`` every client first gets a ``drain`` notice carrying
        ``retry_after``; the server waits up to ``drain`` seconds for clients to
        leave, then closes the rest with 4000 (reconnect).
        """
        if self._closed:
            return
        self._closed = True
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._server is not None:
            if drain > 0:
                notice = Session(now=0.0).drain(retry_after).text
                broadcast([c.ws for c in self._conns], notice)
                self._all_gone.clear()
                if self._conns:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._all_gone.wait(), drain)
            self._server.close(close_connections=True, code=CloseCode.DRAINING, reason="draining")
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await self.broker.close()

    # -- publishing

    async def publish(self, channel: str, data: Any, *, ts: float | None = None) -> Position:
        """Publish ``data`` on ``channel``; its position in the stream.

        ``data`` is anything JSON-serialisable, or a model (``PriceTick``, ``Signal``,
        ...), sent as its canonical dict. ``ts`` (Unix seconds) defaults to now.
        """
        if self._closed:
            raise ClosedError("server is closed")
        why = validate_channel(channel)
        if why is not None:
            raise ValueError(f"bad channel name {channel!r}: {why}")
        if isinstance(data, Model):
            data = data.to_dict()
        data_json = dumps(data)
        return await self.broker.publish(
            channel, data_json, self.clock.time() if ts is None else ts
        )

    def _deliver(self, msg: Message) -> None:
        """Fan one message out on this node; never waits (called by the broker)."""
        self._latest[msg.channel] = msg.position
        self._counters.messages_published += 1
        if self._slow_pending:
            self._apply_transitions()
        fan = self._fanouts.get(msg.channel)
        if fan is None:
            return
        fan.last_publish = time.monotonic()
        fast = fan.fast
        if fast:
            broadcast(fast, msg.frame, text=True)
            n = len(fast)
            self._counters.messages_sent += n
            self._counters.bytes_sent += n * len(msg.frame)
        for conn in fan.queued:
            conn.enqueue(msg)
        if self._slow_pending:
            self._apply_transitions()

    # -- slow clients

    def _became_slow(self, conn: _Conn) -> None:
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
            if conn.slow or conn.closing or conn not in self._conns:
                continue
            conn.slow = True
            self._counters.slow_events += 1
            for ch in conn.modes:
                fan = self._fanouts.get(ch)
                if fan is not None:
                    fan.fast.discard(conn.ws)
                    fan.queued.add(conn)
            self._kick(conn)

    def _kick(self, conn: _Conn) -> None:
        if conn.flusher is None or conn.flusher.done():
            conn.flusher = self._spawn(self._flush(conn))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _write(self, conn: _Conn, frame: bytes | str) -> None:
        """Write without waiting (the connection's own buffer absorbs it)."""
        broadcast((conn.ws,), frame, text=True)
        self._counters.messages_sent += 1
        self._counters.bytes_sent += len(frame)
        conn.last_sent = time.monotonic()

    async def _flush(self, conn: _Conn) -> None:
        """Wait for the buffer to drain, flush pending state, return to the fast path."""
        ws = conn.ws
        policy = self.slow_policy
        try:
            while not conn.closing:
                if _paused(ws):
                    try:
                        await asyncio.wait_for(ws.drain(), policy.grace)
                    except asyncio.TimeoutError:
                        await self._close_slow(conn)
                        return
                    continue
                for channel in list(conn.pending):
                    if channel in conn.syncing:
                        continue
                    for frame in conn.take_pending(channel, 0):
                        self._write(conn, frame)
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
                    fan = self._fanouts.get(ch)
                    if fan is not None:
                        fan.queued.discard(conn)
                        fan.fast.add(ws)
                return
        except (ConnectionClosed, ConnectionError, OSError):
            # The peer went away while we waited for its buffer; the handler cleans up.
            return

    async def _close_slow(self, conn: _Conn) -> None:
        self.log.warning("closing slow connection %s (over the high watermark)", conn.id)
        self._counters.slow_disconnects += 1
        conn.close_code = int(CloseCode.SLOW_CONSUMER)
        self._detach(conn)
        await conn.ws.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    # -- connections

    async def _handler(self, ws: ServerConnection) -> None:
        if self._closed:
            await ws.close(CloseCode.DRAINING, "draining")
            return
        if len(self._conns) >= self.limits.max_connections:
            self._counters.rejected_connections += 1
            await ws.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
            return
        session = Session(
            now=time.monotonic(),
            limits=self.limits,
            require_hello=self.authenticator is not None,
            allow_publish=self.allow_publish,
        )
        conn = _Conn(self, ws, session)
        if self.slow_policy.send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.slow_policy.send_buffer)
        if isinstance(ws, _Connection):
            ws.fokha = conn
        self._conns.add(conn)
        try:
            while True:
                deadline = session.hello_deadline()
                try:
                    if deadline is None:
                        raw = await ws.recv()
                    else:
                        raw = await asyncio.wait_for(
                            ws.recv(), max(0.0, deadline - time.monotonic())
                        )
                except asyncio.TimeoutError:
                    await self._apply(conn, session.poll(time.monotonic()))
                    continue
                now = time.monotonic()
                if isinstance(raw, str):
                    actions = session.receive_text(raw, now)
                else:
                    actions = session.receive_bytes(bytes(raw), now)
                await self._apply(conn, actions)
        except ConnectionClosed:
            pass
        except asyncio.TimeoutError:
            # A direct send (reply, recovery) waited op_timeout for the peer to read.
            self._counters.slow_disconnects += 1
            conn.close_code = int(CloseCode.SLOW_CONSUMER)
            # Awaited here: once the handler returns, websockets closes with 1000.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    ws.close(CloseCode.SLOW_CONSUMER, "slow consumer"), self.op_timeout
                )
        finally:
            self._detach(conn)
            if isinstance(ws, _Connection):
                ws.fokha = None

    def _detach(self, conn: _Conn) -> None:
        conn.closing = True
        self._conns.discard(conn)
        if not self._conns:
            self._all_gone.set()
        for ch in conn.modes:
            fan = self._fanouts.get(ch)
            if fan is not None:
                fan.fast.discard(conn.ws)
                fan.queued.discard(conn)
                if not fan.fast and not fan.queued:
                    del self._fanouts[ch]
        conn.pending.clear()
        conn.pending_count = 0
        if conn.flusher is not None and conn.flusher is not asyncio.current_task():
            conn.flusher.cancel()

    async def _send(self, conn: _Conn, text: str) -> None:
        await asyncio.wait_for(conn.ws.send(text), self.op_timeout)
        self._counters.messages_sent += 1
        self._counters.bytes_sent += len(text)
        conn.last_sent = time.monotonic()

    async def _apply(self, conn: _Conn, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if '"type":"error"' in action.text[:20]:
                    self._counters.errors_sent += 1
                await self._send(conn, action.text)
            elif isinstance(action, Close):
                conn.close_code = action.code
                # Close in the background: the handler keeps reading (and ignoring) what
                # the peer already sent, else its close frame could sit behind unread
                # frames until close_timeout.
                self._spawn(conn.ws.close(action.code, action.reason))
                return
            elif isinstance(action, HelloRequest):
                await self._apply(conn, await self._hello(conn, action))
            elif isinstance(action, SubscribeRequest):
                await self._subscribe(conn, action)
            elif isinstance(action, UnsubscribeRequest):
                self._unsubscribe(conn, action.channels)
            elif isinstance(action, PublishRequest):
                await self._apply(conn, await self._client_publish(conn, action))

    async def _hello(self, conn: _Conn, req: HelloRequest) -> list[Action]:
        session = conn.session
        if self.authenticator is not None:
            try:
                principal = await asyncio.wait_for(
                    self.authenticator.authenticate(req.token), self.op_timeout
                )
            except AuthError as exc:
                self._counters.auth_failures += 1
                return session.hello_refused(req.id, exc.error_code, exc.detail)
            except asyncio.TimeoutError:
                return session.refused(req.id, ErrorCode.UNAVAILABLE, "authenticator timed out")
            conn.principal = principal
        return session.hello_accepted(
            req.id,
            session_id=conn.id,
            heartbeat=self.heartbeat_interval,
            server=self.name,
            user=conn.principal.subject,
        )

    async def _allowed(self, conn: _Conn, channel: str, action: str) -> bool | None:
        """The authoriser's verdict; ``None`` when an async authoriser timed out.

        A timeout here is the server's dependency being slow, not the client: it is
        answered with a temporary ``unavailable`` error, never a slow-consumer close.
        """
        verdict = self.authorize(conn.principal, channel, action)
        if inspect.isawaitable(verdict):
            try:
                verdict = await asyncio.wait_for(verdict, self.op_timeout)
            except asyncio.TimeoutError:
                self.log.warning("authorizer timed out for %s on %r", action, channel)
                return None
        return bool(verdict)

    def _default_mode(self, channel: str) -> Mode:
        import fnmatch

        if any(fnmatch.fnmatchcase(channel, p) for p in self.conflate):
            return Mode.LATEST
        return Mode.ALL

    async def _subscribe(self, conn: _Conn, req: SubscribeRequest) -> None:
        session = conn.session
        for cr in req.channels:
            allowed = await self._allowed(conn, cr.channel, "subscribe")
            if not allowed:
                code, why = (
                    (ErrorCode.UNAVAILABLE, "authorizer timed out; retry")
                    if allowed is None
                    else (ErrorCode.FORBIDDEN, "not allowed on this channel")
                )
                await self._apply(conn, session.refused(req.id, code, why, channel=cr.channel))
                return
        # Park the channels in the queued set while we fetch their recovery, so live
        # messages wait behind the recovered ones instead of overtaking them.
        for cr in req.channels:
            ch = cr.channel
            conn.modes[ch] = cr.mode or self._default_mode(ch)
            old = conn.pending.pop(ch, None)
            if old is not None:
                conn.pending_count -= 1 if isinstance(old, _Conflated) else len(old)
            conn.syncing[ch] = conn.syncing.get(ch, 0) + 1
            fan = self._fanouts.get(ch)
            if fan is None:
                fan = self._fanouts[ch] = _Fanout()
            fan.fast.discard(conn.ws)
            fan.queued.add(conn)
        recoveries: list[Recovery] = []
        try:
            for cr in req.channels:
                recoveries.append(
                    await asyncio.wait_for(
                        self.broker.recover(cr.channel, cr.since), self.op_timeout
                    )
                )
        except Exception as exc:
            self.log.warning("recovery failed: %r", exc)
            for cr in req.channels:
                self._end_sync(conn, cr.channel, 0)
            await self._apply(
                conn, session.refused(req.id, ErrorCode.UNAVAILABLE, "history unavailable")
            )
            return
        results = [
            SubscribeResult(cr.channel, conn.modes[cr.channel], rec.position, rec.recovered)
            for cr, rec in zip(req.channels, recoveries, strict=True)
        ]
        await self._apply(conn, session.subscribed(req.id, results))
        sent = time.time()
        for cr, rec in zip(req.channels, recoveries, strict=True):
            if rec.recovered is True:
                self._counters.recovery_hits += 1
            elif rec.recovered is False:
                self._counters.recovery_misses += 1
            last = 0
            for msg in rec.messages:
                if rec.recovered is True:
                    frame = msg.frame
                else:
                    frame = snapshot_frame(msg, sent, rec.recovered)
                await asyncio.wait_for(conn.ws.send(frame, text=True), self.op_timeout)
                self._counters.messages_sent += 1
                self._counters.bytes_sent += len(frame)
                last = msg.seq
            self._end_sync(conn, cr.channel, last)

    def _end_sync(self, conn: _Conn, channel: str, last: int) -> None:
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
                self._write(conn, frame)
            fan = self._fanouts.get(channel)
            if fan is not None and not conn.slow:
                fan.queued.discard(conn)
                fan.fast.add(conn.ws)
        else:
            conn.trim_pending(channel, last)
            self._kick(conn)

    def _unsubscribe(self, conn: _Conn, channels: Sequence[str]) -> None:
        for ch in channels:
            conn.modes.pop(ch, None)
            old = conn.pending.pop(ch, None)
            if old is not None:
                conn.pending_count -= 1 if isinstance(old, _Conflated) else len(old)
            fan = self._fanouts.get(ch)
            if fan is not None:
                fan.fast.discard(conn.ws)
                fan.queued.discard(conn)
                if not fan.fast and not fan.queued:
                    del self._fanouts[ch]

    async def _client_publish(self, conn: _Conn, req: PublishRequest) -> list[Action]:
        session = conn.session
        allowed = await self._allowed(conn, req.channel, "publish")
        if allowed is None:
            return session.refused(
                req.id, ErrorCode.UNAVAILABLE, "authorizer timed out; retry", channel=req.channel
            )
        if not allowed:
            return session.refused(
                req.id, ErrorCode.FORBIDDEN, "not allowed to publish here", channel=req.channel
            )
        try:
            data_json = dumps(req.data)
            position = await asyncio.wait_for(
                self.broker.publish(req.channel, data_json, self.clock.time()), self.op_timeout
            )
        except Exception as exc:
            self.log.warning("client publish failed: %r", exc)
            return session.refused(req.id, ErrorCode.UNAVAILABLE, "publish failed; retry")
        return session.published(req.id, req.channel, position)

    # -- heartbeats

    async def _heartbeats(self) -> None:
        interval = self.heartbeat_interval
        while True:
            await self.clock.sleep(interval / 2)
            now = time.monotonic()
            wall = self.clock.time()
            for conn in list(self._conns):
                expires = conn.principal.expires_at if conn.principal is not None else None
                if expires is not None and wall >= expires and not conn.closing:
                    # A token's lifetime bounds the connection too, not only the hello.
                    conn.closing = True
                    conn.close_code = int(CloseCode.TOKEN_EXPIRED)
                    self._spawn(conn.ws.close(CloseCode.TOKEN_EXPIRED, "token expired"))
                    continue
                if conn.closing or conn.slow or conn.pending or not conn.session.authenticated:
                    continue
                busy = conn.last_sent
                for ch in conn.modes:
                    fan = self._fanouts.get(ch)
                    if fan is not None and fan.last_publish > busy:
                        busy = fan.last_publish
                if now - busy < interval:
                    continue
                frame = conn.session.heartbeat(
                    wall, _wall_positions(self._latest, list(conn.modes))
                )
                self._write(conn, frame.text)

    # -- introspection

    def metrics(self) -> WebSocketMetrics:
        """A snapshot of the counters."""
        c = self._counters
        return WebSocketMetrics(
            connections=len(self._conns),
            subscriptions=sum(len(conn.modes) for conn in self._conns),
            slow_clients=sum(1 for conn in self._conns if conn.slow),
            messages_published=c.messages_published,
            messages_sent=c.messages_sent,
            bytes_sent=c.bytes_sent,
            conflated=c.conflated,
            dropped=c.dropped,
            gaps=c.gaps,
            slow_disconnects=c.slow_disconnects,
            slow_events=c.slow_events,
            recovery_hits=c.recovery_hits,
            recovery_misses=c.recovery_misses,
            auth_failures=c.auth_failures,
            errors_sent=c.errors_sent,
            rejected_connections=c.rejected_connections,
        )

    def connection_stats(self) -> list[dict[str, Any]]:
        """Per-connection details (id, user, channels, slow, pending messages, write buffer)."""
        out = []
        for conn in self._conns:
            transport = conn.ws.transport
            out.append(
                {
                    "id": conn.id,
                    "user": conn.principal.subject,
                    "channels": sorted(conn.modes),
                    "slow": conn.slow,
                    "pending": conn.pending_count,
                    "write_buffer": transport.get_write_buffer_size() if transport else 0,
                }
            )
        return out
