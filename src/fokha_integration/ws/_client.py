"""``WebSocketClient``: the Python client of protocol v1, built to never miss silently.

It connects, says hello with a token, subscribes, and yields typed
:class:`ChannelMessage` values from ``async for``. Behind that:

* reconnect with the delays of a :class:`~fokha_integration.resilience.RetryPolicy`
  (exponential, capped, full jitter by default), honouring the server's close code
  (4500-4999 and "your fault" codes stop it) and the ``retry_after`` of a drain
  notice;
* after a reconnect it resubscribes every channel with ``since`` = the last
  position it delivered, so the server replays exactly what was missed (or sends a
  snapshot marked ``recovered=False`` when it cannot);
* sequence gaps (a jump in ``seq``, a ``gap`` marker, a heartbeat showing a newer
  position, an epoch change) trigger the same recovery for that channel, and
  messages at or before the last delivered position are dropped as duplicates;
* a heartbeat watchdog: no frame at all for ``3 x`` the server's heartbeat interval
  means the connection is dead, so it reconnects;
* connection-state events through ``on_state``.

Messages are handed over through a bounded queue; while it is full the client stops
reading, which the server sees as a slow client (and conflates or gaps for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .. import _validate
from .._aio import cancel_and_wait
from .._client_rules import CLIENT_RULES
from .._version import __version__
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import (
    ClosedError,
    ConfigError,
    OperationTimeoutError,
    ProtocolError,
    ValidationError,
)
from ..resilience import RetryPolicy
from ._protocol import Mode, Position, dumps, is_reconnect_code, validate_channel

__all__ = ["ChannelMessage", "ClientState", "StateEvent", "WebSocketClient"]

TokenSource = str | Callable[[], str | Awaitable[str]] | None


class ClientState(str, Enum):
    """Where the client's connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateEvent:
    """A change of :class:`ClientState`, with the close code/reason and next delay."""

    state: ClientState
    code: int | None = None
    reason: str = ""
    attempt: int = 0
    delay: float | None = None


class ChannelMessage(NamedTuple):
    """One message of a channel as the application sees it (an immutable record).

    ``kind``: ``update``, ``snapshot`` (latest value; ``recovered`` is ``False`` when
    it replaces history the server no longer had) or ``conflated`` (stands for
    ``first_seq`` .. ``seq``). ``ts`` is the publish time, ``sent`` the server's
    send time (Unix seconds). A ``NamedTuple`` rather than a frozen dataclass: one is
    built per delivery, and a frozen dataclass costs about six times as much to build.
    """

    channel: str
    epoch: str
    seq: int
    kind: str
    data: Any
    ts: float
    sent: float
    first_seq: int
    recovered: bool | None = None

    @property
    def position(self) -> Position:
        """This message's position (what ``since`` would carry)."""
        return Position(self.epoch, self.seq)


class _Closed(Exception):
    pass


def _retry_policy(backoff: object, retry: object) -> RetryPolicy:
    """The reconnect policy from ``retry`` or the ``backoff`` shorthand."""
    if retry is not None and backoff is not None:
        raise ConfigError("backoff", "give retry or backoff, not both", backoff)
    if retry is not None:
        if not isinstance(retry, RetryPolicy):
            raise ConfigError("retry", "must be a RetryPolicy", retry)
        return retry
    if backoff is None:
        # The shared client rules (the generated Dart client follows the same table).
        return RetryPolicy(
            initial=CLIENT_RULES.reconnect_initial,
            multiplier=CLIENT_RULES.reconnect_multiplier,
            max_delay=CLIENT_RULES.reconnect_cap,
            deadline=None,
        )
    if not isinstance(backoff, tuple) or len(backoff) != 2:
        raise ConfigError("backoff", "must be a pair (initial, cap) of seconds", backoff)
    initial = _validate.non_negative("backoff.initial", backoff[0])
    cap = _validate.non_negative("backoff.cap", backoff[1])
    return RetryPolicy(initial=initial, max_delay=cap, deadline=None)


def _check_settings(
    name: object,
    queue_size: object,
    request_timeout: object,
    open_timeout: object,
    heartbeat_timeout: object,
    max_size: object,
    on_message: object,
) -> None:
    """Refuse wrong-typed or out-of-range client settings with ConfigError."""
    _validate.string("name", name, max_length=64)
    _validate.integer("queue_size", queue_size, minimum=1)
    _validate.positive("request_timeout", request_timeout)
    _validate.positive("open_timeout", open_timeout)
    if heartbeat_timeout is not None:
        _validate.positive("heartbeat_timeout", heartbeat_timeout)
    _validate.integer("max_size", max_size, minimum=1024)
    if on_message is not None and not callable(on_message):
        raise ConfigError("on_message", "must be callable", on_message)


def _dead_after(
    heartbeat_timeout: float | None, welcome: Mapping[str, Any], opening: float
) -> float:
    """Seconds without any frame after which the connection counts as dead.

    Before the welcome: the open timeout; after it: the client rules' number of
    missed heartbeat intervals (3), unless ``heartbeat_timeout`` was given.
    """
    if heartbeat_timeout is not None:
        return heartbeat_timeout
    hb = welcome.get("heartbeat") if welcome else None
    if isinstance(hb, (int, float)) and not isinstance(hb, bool) and hb > 0:
        return CLIENT_RULES.heartbeat_misses * float(hb)
    return opening


class _ChannelBook:
    """What the client wants and where each channel stands: the decisions, no I/O.

    ``accept`` says, for each ``message`` frame, whether to deliver it, drop it as a
    duplicate, or recover the channel (a jump in ``seq``, a ``gap`` marker, another
    epoch); ``behind`` reads a heartbeat the same way. The client does the sending.
    """

    def __init__(self, positions: Mapping[str, Position] | None) -> None:
        self.wanted: dict[str, Mode | None] = {}
        # The last delivered message (or a given Position) per channel: both have
        # .epoch and .seq, and keeping the message saves a Position per delivery.
        self.positions: dict[str, Position | ChannelMessage] = dict(positions or {})
        self.recovering: set[str] = set()
        self.recovery_ids: dict[int, str] = {}
        self.modes: dict[str, Mode] = {}
        self.gaps = 0

    def entry(self, ch: str) -> dict[str, Any]:
        """The ``subscribe`` entry for ``ch``: its mode and ``since`` its last position."""
        entry: dict[str, Any] = {"channel": ch}
        mode = self.wanted.get(ch)
        if mode is not None:
            entry["mode"] = mode.value
        pos = self.positions.get(ch)
        if pos is not None:
            entry["since"] = {"epoch": pos.epoch, "seq": pos.seq}
        return entry

    def drop(self, ch: str) -> None:
        """Forget ``ch`` (unsubscribed)."""
        self.wanted.pop(ch, None)
        self.positions.pop(ch, None)

    def start_recovery(self, ch: str, request_id: int) -> bool:
        """Mark ``ch`` as recovering under ``request_id``; False if it already is."""
        if ch in self.recovering:
            return False
        self.recovering.add(ch)
        self.recovery_ids[request_id] = ch
        self.gaps += 1
        return True

    def answered(self, frame: Mapping[str, Any]) -> None:
        """An ``ack``/``error`` arrived: channels acked flow again (with their mode)."""
        if frame.get("type") == "ack" and frame.get("op") == "subscribe":
            for entry in frame.get("channels", ()):
                ch = entry.get("channel")
                self.recovering.discard(ch)
                mode = entry.get("mode")
                if mode in ("all", "latest"):
                    self.modes[ch] = Mode(mode)
        rid = frame.get("id")
        if isinstance(rid, int) and rid in self.recovery_ids:
            # The answer to a gap recovery: on ack the channel flows again; on error
            # stop waiting, so the next gap or heartbeat can try again.
            self.recovering.discard(self.recovery_ids.pop(rid))

    def behind(self, channels: object) -> list[str]:
        """The wanted channels a heartbeat shows newer (or of another epoch) than ours."""
        if not isinstance(channels, dict):
            return []
        out = []
        for ch, pos in channels.items():
            if ch not in self.wanted or not isinstance(pos, dict):
                continue
            mine = self.positions.get(ch)
            if mine is None or pos.get("epoch") != mine.epoch or pos.get("seq", 0) > mine.seq:
                out.append(ch)
        return out

    def accept(self, frame: Mapping[str, Any]) -> tuple[ChannelMessage | None, str | None]:
        """(the message to deliver, or None; the channel to recover, or None)."""
        ch = frame.get("channel")
        epoch, seq, kind = frame.get("epoch"), frame.get("seq"), frame.get("kind")
        if not isinstance(ch, str) or not isinstance(epoch, str) or not isinstance(seq, int):
            return None, None
        if ch not in self.wanted or ch in self.recovering:
            return None, None
        mine = self.positions.get(ch)
        mode = self.modes.get(ch, Mode.ALL)
        if kind == "gap":
            return None, ch if mode is Mode.ALL else None
        first = frame.get("from", seq) if kind == "conflated" else seq
        if kind != "snapshot" and mine is not None:
            if epoch == mine.epoch and seq <= mine.seq:
                return None, None  # a duplicate of something already delivered
            if mode is Mode.ALL and (epoch != mine.epoch or first != mine.seq + 1):
                return None, ch
        if kind == "snapshot" and mine is not None and epoch == mine.epoch and seq <= mine.seq:
            return None, None
        msg = ChannelMessage(
            ch,
            epoch,
            seq,
            str(kind),
            frame.get("data"),
            float(frame.get("ts", 0.0)),
            float(frame.get("sent", 0.0)),
            first if isinstance(first, int) else seq,
            frame.get("recovered"),
        )
        self.positions[ch] = msg
        return msg, None


class _TokenFlight:
    """A token source asked once at a time: concurrent callers share one call."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source
        self.calls = 0
        self._flight: asyncio.Future[str | None] | None = None

    async def get(self) -> str | None:
        if self.source is None or isinstance(self.source, str):
            return self.source
        if self._flight is not None and self._flight.done():
            # Finished while its callers were gone (cancelled): never hand out a stale
            # token or error; ask the source again.
            self._flight = None
        if self._flight is None:
            self.calls += 1
            self._flight = asyncio.ensure_future(
                asyncio.wait_for(_resolve_token(self.source), CLIENT_RULES.token_refresh_timeout)
            )
        flight = self._flight
        try:
            return await asyncio.shield(flight)
        finally:
            if flight.done() and self._flight is flight:
                self._flight = None


async def _resolve_token(source: TokenSource) -> str | None:
    """The token for this connect: the string, or what the (async) callable returns."""
    if source is None or isinstance(source, str):
        return source
    value = source()
    if isinstance(value, str):
        return value
    return await value


def _hello_frame(token: str | None, name: str) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "op": "hello",
        "protocol": 1,
        "client": {"name": name, "version": __version__},
    }
    if token is not None:
        # Optional string in the spec: absent, never null.
        frame["token"] = token
    return frame


class WebSocketClient:
    """A reconnecting, recovering client (see the module docstring).

    ``token``: a string or a (sync or async) callable returning a fresh token at
    each connect. ``retry``: the :class:`RetryPolicy` whose delay sequence (and
    jitter) spaces reconnects; the client keeps reconnecting for as long as the
    server's close codes allow, so only the policy's delays count, not its
    ``attempts``/``deadline``. ``backoff``: ``(initial, cap)`` seconds, a shorthand for
    ``RetryPolicy(initial=initial, max_delay=cap)``. ``queue_size``: messages
    buffered for the consumer. ``request_timeout``: bound on each request.
    ``url`` may be a list of node URLs: each reconnect moves to the next one, and
    recovery with ``since`` works across nodes that share a Redis broker.
    ``positions``: where a previous run stopped (e.g. saved ``client.positions``), so
    the first subscribe already recovers what was missed while the app was closed.
    ``on_message``: a callback (sync, or async and then awaited) that gets every
    message in the connection's reader task instead of the ``async for`` queue - one
    task step per message instead of two, the lean path for high rates; while an
    async callback runs the client reads nothing more (the server sees a slow client).
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: TokenSource = None,
        name: str = "fokha-python",
        backoff: tuple[float, float] | None = None,
        retry: RetryPolicy | None = None,
        queue_size: int = 10_000,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        heartbeat_timeout: float | None = None,
        max_size: int = 4 * 1024 * 1024,
        on_state: Callable[[StateEvent], None] | None = None,
        on_message: Callable[[ChannelMessage], object] | None = None,
        positions: Mapping[str, Position] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls or not all(isinstance(u, str) and u for u in self.urls):
            raise ConfigError("url", "must be a URL or a non-empty list of URLs", url)
        retry = _retry_policy(backoff, retry)
        _check_settings(
            name, queue_size, request_timeout, open_timeout, heartbeat_timeout, max_size, on_message
        )
        self.url = self.urls[0]
        self._url_index = 0
        self._tokens = _TokenFlight(token)
        self._name = name
        self._retry = retry
        self._request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._max_size = max_size
        self._on_state = on_state
        self._on_message_cb = on_message
        self._clock = clock
        self._rng = rng or random.Random()
        self.log = logger or logging.getLogger("fokha_integration.ws.client")
        self._queue: asyncio.Queue[ChannelMessage | _Closed] = asyncio.Queue(queue_size)
        self._stash: list[ChannelMessage | _Closed] = []  # taken by a cancelled read
        self._book = _ChannelBook(positions)
        self._futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self.state = ClientState.CLOSED
        self.close_code: int | None = None
        self.close_reason = ""
        self.retry_after: float | None = None
        self.welcome: dict[str, Any] = {}
        self.reconnects = 0
        self._last_frame = 0.0
        self._connected_at = 0.0

    # -- tokens

    async def refresh_token(self) -> str | None:
        """A fresh token from the token source: single flight, with a timeout.

        Concurrent callers share one call of the source (``token_refreshes`` counts
        the calls). A source that fails or takes longer than the client rules'
        ``token_refresh_timeout`` raises here; a healthy connection is never closed
        for it (only the next connect needs a token).
        """
        return await self._tokens.get()

    @property
    def token_refreshes(self) -> int:
        """How often the token source was called."""
        return self._tokens.calls

    # -- lifecycle

    async def connect(self, *, timeout: float | None = None) -> None:
        """Start the connection loop and wait until the first ``welcome``."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(self._run())
        task = self._task
        wait = self._open_timeout * 2 if timeout is None else timeout
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait((connected, task), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if self._connected.is_set():
            return
        if task.done():
            self._task = None if self._task is task else self._task
            why = "closed" if self._stopping.is_set() else "closed by the server:"
            raise ClosedError(f"{why} {self.close_code} {self.close_reason}")
        raise OperationTimeoutError("connect", wait)

    async def close(self) -> None:
        """Close for good (no reconnect); the iterator ends. An open connection gets
        its close handshake; an opening one (or a wait to reconnect) is abandoned at
        once instead of running out its ``open_timeout``."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        task = self._task
        if task is not None:
            if ws is not None:
                await asyncio.wait({task}, timeout=self._request_timeout)
            await cancel_and_wait(task)
            self._task = None

    async def __aenter__(self) -> WebSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[ChannelMessage]:
        return self

    async def __anext__(self) -> ChannelMessage:
        if self._stash:
            return self._unwrap(self._stash.pop())
        queue = self._queue
        # Fast path: no coroutine for Queue.get when messages are already waiting.
        item = queue.get_nowait() if queue.qsize() else await queue.get()
        return self._unwrap(item)

    def _unwrap(self, item: ChannelMessage | _Closed) -> ChannelMessage:
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        return item

    async def next_message(self, timeout: float) -> ChannelMessage:
        """The next message, waiting at most ``timeout`` seconds.

        Cancelling the caller always cancels the wait (``asyncio.wait_for`` before
        Python 3.12 could swallow a cancellation), and a message taken off the queue
        at that moment is not lost: the next read returns it.
        """
        queue = self._queue
        if self._stash or queue.qsize():
            return await self.__anext__()
        getter = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait({getter}, timeout=timeout)
        except asyncio.CancelledError:
            if getter.done() and not getter.cancelled():
                self._stash.append(getter.result())  # taken, not delivered: next read
            getter.cancel()
            raise
        if not done:
            getter.cancel()
            raise OperationTimeoutError("next_message", timeout)
        return self._unwrap(getter.result())

    @property
    def positions(self) -> dict[str, Position]:
        """The last delivered position of each channel."""
        return {ch: Position(p.epoch, p.seq) for ch, p in self._book.positions.items()}

    @property
    def gaps_detected(self) -> int:
        """How often a channel was found behind and recovered."""
        return self._book.gaps

    # -- requests

    async def subscribe(self, *channels: str, mode: Mode | str | None = None) -> None:
        """Subscribe (now if connected, else at the next connect); waits for the ack."""
        m = None if mode is None else Mode(mode)
        for ch in channels:
            why = validate_channel(ch)
            if why is not None:
                raise ValidationError("channel", why, ch)
        for ch in channels:
            self._book.wanted[ch] = m
        if self._ws is not None and self._connected.is_set():
            await self._request(
                {"op": "subscribe", "channels": [self._book.entry(ch) for ch in channels]}
            )

    async def unsubscribe(self, *channels: str) -> None:
        """Stop receiving ``channels``."""
        for ch in channels:
            self._book.drop(ch)
        if self._ws is not None and self._connected.is_set():
            await self._request({"op": "unsubscribe", "channels": list(channels)})

    async def publish(self, channel: str, data: Any) -> Position:
        """Publish through the server (if it allows client publishes)."""
        reply = await self._request({"op": "publish", "channel": channel, "data": data})
        pos = reply["position"]
        return Position(pos["epoch"], pos["seq"])

    async def ping(self) -> None:
        """Round-trip a ``ping``."""
        await self._request({"op": "ping"})

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise ClosedError("not connected")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[rid] = fut
        try:
            await ws.send(dumps({**frame, "id": rid}))
            return await asyncio.wait_for(fut, self._request_timeout)
        except asyncio.TimeoutError:
            raise OperationTimeoutError(str(frame.get("op")), self._request_timeout) from None
        finally:
            self._futures.pop(rid, None)

    # -- the connection loop

    def _set_state(self, event: StateEvent) -> None:
        self.state = event.state
        if self._on_state is not None:
            try:
                self._on_state(event)
            except Exception:
                self.log.exception("on_state callback failed")

    async def _run(self) -> None:
        attempt = 0
        delays = self._retry.jittered_delays(self._rng)
        try:
            while not self._stopping.is_set():
                self._set_state(StateEvent(ClientState.CONNECTING, attempt=attempt))
                code, reason = await self._session_once()
                if (
                    self._connected.is_set()
                    and self._clock.monotonic() - self._connected_at >= CLIENT_RULES.healthy_after
                ):
                    # Only a connection that stayed up resets the backoff: a server that
                    # accepts and drops at once must not be hammered at the first delay.
                    attempt = 0
                    delays = self._retry.jittered_delays(self._rng)
                self._connected.clear()
                self._ws = None
                self.close_code, self.close_reason = code, reason
                if self._stopping.is_set():
                    break
                if not is_reconnect_code(code):
                    self.log.warning("server closed with %s %s: not reconnecting", code, reason)
                    break
                delay = next(delays)
                if self.retry_after is not None:
                    # Never sooner than the drain notice asks, and still spread: every
                    # client of a draining node got the same retry_after.
                    delay += self.retry_after
                    self.retry_after = None
                attempt += 1
                self.reconnects += 1
                # Fail over: the next attempt goes to the next URL (another node).
                self._url_index = (self._url_index + 1) % len(self.urls)
                self.url = self.urls[self._url_index]
                self._set_state(
                    StateEvent(ClientState.RECONNECTING, code, reason, attempt, round(delay, 3))
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._connected.clear()
            self._set_state(StateEvent(ClientState.CLOSED, self.close_code, self.close_reason))
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_exception(ClosedError("client closed"))
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_Closed())

    async def _session_once(self) -> tuple[int | None, str]:
        """One connection from open to close; returns the close code and reason."""
        try:
            token = await self.refresh_token()
            self.welcome = {}
            async with connect(
                self.url,
                open_timeout=self._open_timeout,
                compression=None,
                max_size=self._max_size,
                close_timeout=2,
            ) as ws:
                self._ws = ws
                reader = asyncio.get_running_loop().create_task(self._read(ws))
                # A request waiting for its reply (hello, the resubscribe) must not sit
                # out its timeout on a connection that is already gone.
                reader.add_done_callback(self._fail_requests)
                try:
                    self.welcome = await self._request(_hello_frame(token, self._name))
                    self._connected_at = self._clock.monotonic()
                    self._connected.set()
                    self._set_state(StateEvent(ClientState.CONNECTED))
                    if self._book.wanted:
                        self._book.recovering.clear()
                        await self._request(
                            {
                                "op": "subscribe",
                                "channels": [self._book.entry(ch) for ch in self._book.wanted],
                            }
                        )
                    await reader
                except (ProtocolError, OperationTimeoutError, ClosedError) as exc:
                    self.log.warning("session failed: %r", exc)
                    with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                        await asyncio.wait_for(asyncio.shield(reader), 2.0)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await reader
                rcvd = ws.protocol.close_rcvd
                if rcvd is not None:
                    return rcvd.code, rcvd.reason
                return None, "connection lost"
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            return None, f"connect failed: {exc!r}"
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                return exc.rcvd.code, exc.rcvd.reason
            return None, "connection lost"

    def _fail_requests(self, _reader: asyncio.Task[None]) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(ClosedError("connection lost"))

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Close with 4005 when no frame arrived for the watchdog limit.

        One task per connection that wakes about once per limit, instead of a
        ``wait_for`` (a new task on Python 3.11) around every ``recv``.
        """
        while True:
            limit = _dead_after(self._heartbeat_timeout, self.welcome, self._open_timeout)
            idle = time.monotonic() - self._last_frame
            if idle >= limit:
                self.log.warning("no frame for %.1fs: reconnecting", limit)
                # Shielded: the reader ends (and cancels this task) as soon as the close
                # starts, but the closing handshake must still run to its end.
                await asyncio.shield(ws.close(4005, "heartbeat_watchdog"))
                return
            # Capped: the limit changes when the welcome (its heartbeat) arrives.
            await asyncio.sleep(min(limit - idle, 1.0))

    async def _read(self, ws: ClientConnection) -> None:
        self._last_frame = time.monotonic()
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(ws))
        queue = self._queue
        callback = self._on_message_cb
        try:
            while True:
                try:
                    raw = await ws.recv()
                except ConnectionClosed:
                    return
                self._last_frame = time.monotonic()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    self.log.warning("server sent invalid JSON")
                    continue
                if not isinstance(frame, dict):
                    continue
                msg = self._handle(ws, frame)
                if msg is None:
                    continue
                if callback is not None:
                    try:
                        result = callback(msg)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        # The application's bug must not take the connection down.
                        self.log.exception("on_message callback failed")
                elif queue.full():
                    # The consumer is behind: stop reading (the server sees a slow client).
                    await queue.put(msg)
                else:
                    queue.put_nowait(msg)
        finally:
            watchdog.cancel()

    def _handle(self, ws: ClientConnection, frame: dict[str, Any]) -> ChannelMessage | None:
        """Act on one frame; the message to hand to the consumer, if any."""
        kind = frame.get("type")
        if kind == "message":
            msg, behind = self._book.accept(frame)
            if behind is not None:
                self._recover(ws, behind)
            return msg
        if kind in ("ack", "welcome", "pong", "error"):
            if kind == "welcome":
                self.welcome = frame
            self._book.answered(frame)
            rid = frame.get("id")
            fut = self._futures.get(rid)  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                if kind == "error":
                    fut.set_exception(
                        ProtocolError(str(frame.get("code")), str(frame.get("message", "")))
                    )
                else:
                    fut.set_result(frame)
            elif kind == "error":
                self.log.warning("server error: %s %s", frame.get("code"), frame.get("message"))
        elif kind == "heartbeat":
            for ch in self._book.behind(frame.get("channels")):
                self._recover(ws, ch)
        elif kind == "drain":
            retry = frame.get("retry_after")
            if isinstance(retry, (int, float)) and retry >= 0:
                self.retry_after = min(float(retry), 300.0)
        return None

    def _recover(self, ws: ClientConnection, channel: str) -> None:
        self._next_id += 1
        if not self._book.start_recovery(channel, self._next_id):
            return
        text = dumps(
            {"op": "subscribe", "id": self._next_id, "channels": [self._book.entry(channel)]}
        )
        task = asyncio.get_running_loop().create_task(ws.send(text))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
