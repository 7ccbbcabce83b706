"""``WebSocketServer``: channels with recovery, auth and limits, over the sans-I/O session.

The server is a thin asyncio layer over the sans-I/O :class:`~._protocol.Session`
(one per connection), a :class:`~.brokers.Broker` (sequence numbers, history,
fan-out across nodes) and :class:`~._fanout.Fanout` (this node's subscribers and
the slow-client machinery: conflation, gap markers, flushing, the 4001 close). It
runs on the ``websockets`` asyncio implementation and does the parts that wait:
reading frames, authenticating, recovering history, heartbeats, draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from .. import _validate
from .._aio import cancel_and_wait
from .._version import __version__
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ClosedError, ConfigError, ValidationError
from ..models import Model
from ._auth import Authenticator, AuthError, Authorizer, token_channels
from ._channels import ChannelLimitError, Recovery, replay_frame, snapshot_frame
from ._fanout import Conn, Counters, Fanout, SlowClientPolicy
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


def _check_settings(
    host: object,
    port: object,
    conflate: object,
    compression: object,
    limits: object,
    slow: object,
    allow_publish: object,
    name: object,
) -> None:
    """Refuse wrong-typed or out-of-range server settings with ConfigError."""
    _validate.string("host", host)
    _validate.integer("port", port, minimum=0, maximum=65535)
    if isinstance(conflate, str) or not isinstance(conflate, (list, tuple)):
        raise ConfigError("conflate", "must be a sequence of channel patterns", conflate)
    if not all(isinstance(p, str) for p in conflate):
        raise ConfigError("conflate", "must be a sequence of channel patterns", conflate)
    _validate.one_of("compression", compression, (None, "deflate"))
    if limits is not None and not isinstance(limits, Limits):
        raise ConfigError("limits", "must be a Limits", limits)
    if slow is not None and not isinstance(slow, SlowClientPolicy):
        raise ConfigError("slow", "must be a SlowClientPolicy", slow)
    _validate.boolean("allow_publish", allow_publish)
    _validate.string("name", name)


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


class _Connection(ServerConnection):
    """A websockets connection that tells us when its write buffer crosses the watermarks."""

    fokha: Conn | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.fokha is not None:
            self.fokha.fanout.became_slow(self.fokha)


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
        _check_settings(host, port, conflate, compression, limits, slow, allow_publish, name)
        heartbeat = _validate.positive("heartbeat", heartbeat)
        close_timeout = _validate.positive("close_timeout", close_timeout)
        op_timeout = _validate.positive("op_timeout", op_timeout)
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
        self._conns: set[Conn] = set()
        self._counters = Counters()
        self._fanout = Fanout(self.slow_policy, self._counters, self.log)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closed = False
        self._all_gone = asyncio.Event()

    # -- lifecycle

    async def start(self) -> WebSocketServer:
        """Start the broker and listen; returns ``self``."""
        if self._server is not None:
            return self
        await self.broker.start(self._fanout.deliver)
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
            # WebSocket-level pings (documented): every 20 s, closed with 1011 when no
            # pong comes back within 20 s. The protocol's own heartbeat is separate.
            ping_interval=20.0,
            ping_timeout=20.0,
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
            raise ClosedError("server not started")
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
        await cancel_and_wait(self._heartbeat_task)
        if self._server is not None:
            if drain > 0:
                notice = Session(now=0.0).drain(retry_after).text
                broadcast([c.ws for c in self._conns], notice)
                self._all_gone.clear()
                if self._conns:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._all_gone.wait(), drain)
            self._server.close(
                close_connections=True, code=CloseCode.DRAINING, reason=CloseCode.DRAINING.reason
            )
            await self._server.wait_closed()
        self._fanout.cancel_tasks()
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
            raise ValidationError("channel", why, channel)
        if isinstance(data, Model):
            data = data.to_dict()
        data_json = dumps(data)
        return await self.broker.publish(
            channel, data_json, self.clock.time() if ts is None else ts
        )

    # -- connections

    async def _handler(self, ws: ServerConnection) -> None:
        if self._closed:
            await ws.close(CloseCode.DRAINING, CloseCode.DRAINING.reason)
            return
        if len(self._conns) >= self.limits.max_connections:
            self._counters.rejected_connections += 1
            await ws.close(CloseCode.TOO_MANY_CONNECTIONS, CloseCode.TOO_MANY_CONNECTIONS.reason)
            return
        session = Session(
            now=time.monotonic(),
            limits=self.limits,
            require_hello=self.authenticator is not None,
            allow_publish=self.allow_publish,
        )
        conn = Conn(self._fanout, ws, session)
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
                    ws.close(CloseCode.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER.reason),
                    self.op_timeout,
                )
        finally:
            self._detach(conn)
            if isinstance(ws, _Connection):
                ws.fokha = None

    def _detach(self, conn: Conn) -> None:
        self._fanout.detach(conn)
        self._conns.discard(conn)
        if not self._conns:
            self._all_gone.set()

    async def _send(self, conn: Conn, text: str) -> None:
        await asyncio.wait_for(conn.ws.send(text), self.op_timeout)
        self._counters.messages_sent += 1
        self._counters.bytes_sent += len(text)
        conn.last_sent = time.monotonic()

    async def _apply(self, conn: Conn, actions: list[Action]) -> None:
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
                self._fanout.spawn(conn.ws.close(action.code, action.reason))
                return
            elif isinstance(action, HelloRequest):
                await self._apply(conn, await self._hello(conn, action))
            elif isinstance(action, SubscribeRequest):
                await self._subscribe(conn, action)
            elif isinstance(action, UnsubscribeRequest):
                self._unsubscribe(conn, action.channels)
            elif isinstance(action, PublishRequest):
                await self._apply(conn, await self._client_publish(conn, action))

    async def _hello(self, conn: Conn, req: HelloRequest) -> list[Action]:
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

    async def _allowed(self, conn: Conn, channel: str, action: str) -> bool | None:
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
        if any(fnmatch.fnmatchcase(channel, p) for p in self.conflate):
            return Mode.LATEST
        return Mode.ALL

    async def _subscribe(self, conn: Conn, req: SubscribeRequest) -> None:
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
            conn.modes[cr.channel] = cr.mode or self._default_mode(cr.channel)
            self._fanout.park(conn, cr.channel)
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
                self._fanout.end_sync(conn, cr.channel, 0)
            await self._apply(
                conn, session.refused(req.id, ErrorCode.UNAVAILABLE, "history unavailable")
            )
            return
        results = [
            SubscribeResult(cr.channel, conn.modes[cr.channel], rec.position, rec.recovered)
            for cr, rec in zip(req.channels, recoveries, strict=True)
        ]
        await self._apply(conn, session.subscribed(req.id, results))
        sent = self.clock.time()
        for cr, rec in zip(req.channels, recoveries, strict=True):
            if rec.recovered is True:
                self._counters.recovery_hits += 1
            elif rec.recovered is False:
                self._counters.recovery_misses += 1
            last = 0
            for msg in rec.messages:
                if rec.recovered is True:
                    frame = replay_frame(msg, sent)
                else:
                    frame = snapshot_frame(msg, sent, rec.recovered)
                await asyncio.wait_for(conn.ws.send(frame, text=True), self.op_timeout)
                self._counters.messages_sent += 1
                self._counters.bytes_sent += len(frame)
                last = msg.seq
            self._fanout.end_sync(conn, cr.channel, last)

    def _unsubscribe(self, conn: Conn, channels: Sequence[str]) -> None:
        self._fanout.unsubscribe(conn, channels)

    async def _client_publish(self, conn: Conn, req: PublishRequest) -> list[Action]:
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
        except ChannelLimitError:
            return session.refused(
                req.id, ErrorCode.UNAVAILABLE, "server channel limit reached", channel=req.channel
            )
        except Exception as exc:
            self.log.warning("client publish failed: %r", exc)
            return session.refused(
                req.id, ErrorCode.UNAVAILABLE, "publish failed; retry", channel=req.channel
            )
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
                    # A token's lifetime bounds the connection too, not only the hello:
                    # the same auth_expired error a hello would get, then 4501.
                    conn.close_code = int(CloseCode.TOKEN_EXPIRED)
                    self._fanout.spawn(self._apply(conn, conn.session.token_expired()))
                    conn.closing = True
                    continue
                if conn.closing or conn.slow or conn.pending or not conn.session.authenticated:
                    continue
                if now - self._fanout.last_activity(conn) < interval:
                    continue
                latest = self._fanout.latest
                frame = conn.session.heartbeat(wall, {ch: latest.get(ch) for ch in conn.modes})
                self._fanout.write(conn, frame.text)

    # -- introspection

    def metrics(self) -> WebSocketMetrics:
        """A snapshot of the counters (the same as :meth:`stats`)."""
        return self.stats()

    def stats(self) -> WebSocketMetrics:
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
        return [conn.stats() for conn in self._conns]
