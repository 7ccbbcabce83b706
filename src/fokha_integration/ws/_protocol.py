"""The sans-I/O core of the WebSocket protocol v1 (``docs/protocols/websocket.md``).

A :class:`Session` is one connection's protocol state. The I/O layer feeds it the
text (or binary) frames it received and gets back a list of *actions*: frames to
send (:class:`Send`), a close decision (:class:`Close`), or requests the I/O layer
must carry out because they need the outside world (:class:`HelloRequest` needs the
authenticator, :class:`SubscribeRequest` needs the broker's history, ...). When the
I/O layer is done it tells the session (:meth:`Session.hello_accepted`,
:meth:`Session.subscribed`, ...) and gets the reply frames.

The session validates every inbound frame (JSON, types, sizes, channel names),
enforces the per-connection limits (frame size, channels per connection, inbound
rate through a token bucket driven by the caller's clock, the hello deadline) and
answers with typed errors. It owns no socket, no task and no timer: time comes in
as ``now`` arguments, so it is tested without sockets or sleeps.

It is not the fan-out (see ``_server.py``) and not the channel history
(``_channels.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Union

from .. import _validate
from .protocol_table import CLOSE_CODES, ERROR_CODES
from .protocol_table import PROTOCOL_VERSION as _TABLE_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "Action",
    "ChannelRequest",
    "Close",
    "CloseCode",
    "ErrorCode",
    "HelloRequest",
    "Limits",
    "Mode",
    "Position",
    "PublishRequest",
    "Send",
    "Session",
    "SubscribeRequest",
    "SubscribeResult",
    "TokenBucket",
    "UnsubscribeRequest",
    "dumps",
    "is_reconnect_code",
    "validate_channel",
]

PROTOCOL_VERSION = _TABLE_VERSION
"""The protocol version this module speaks (sent in ``welcome``)."""

_CHANNEL_RE = re.compile(r"^[A-Za-z0-9_\-:@]+(\.[A-Za-z0-9_\-:@]+)*$")
_MAX_CHANNEL_LEN = 128
_MAX_ID_LEN = 64
_MAX_TOKEN_LEN = 4096
_MAX_NAME_LEN = 64


def dumps(obj: Any) -> str:
    """Compact JSON text of a frame (no spaces, UTF-8 kept, NaN refused)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (``protocol_table.CLOSE_CODES`` is the table).

    4000-4499 mean "reconnect (with backoff, after ``retry_after`` when given)";
    4500-4999 mean "do not reconnect without changing something" (a new token, a
    fixed client). :func:`is_reconnect_code` classifies any code.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    DRAINING = 4000
    SLOW_CONSUMER = 4001
    RATE_LIMITED = 4002
    HELLO_TIMEOUT = 4003
    TOO_MANY_CONNECTIONS = 4004
    SERVER_ERROR = 4005
    AUTH_FAILED = 4500
    TOKEN_EXPIRED = 4501
    PROTOCOL_VIOLATION = 4502
    UNSUPPORTED_VERSION = 4503

    @property
    def reason(self) -> str:
        """The close reason sent with this code (a stable token; clients switch on the code)."""
        return _CLOSE_REASONS[int(self)]


_RECONNECT = {spec.code: spec.reconnect for spec in CLOSE_CODES}
_CLOSE_REASONS = {spec.code: spec.reason for spec in CLOSE_CODES}


def is_reconnect_code(code: int | None) -> bool:
    """Whether a client should reconnect after the server closed with ``code``.

    ``None`` (no close frame: the connection dropped) means reconnect; a code in
    ``protocol_table.CLOSE_CODES`` follows its ``reconnect`` column; other codes:
    4500-4999 do not reconnect, everything else does.
    """
    if code is None:
        return True
    known = _RECONNECT.get(code)
    if known is not None:
        return known
    return not 4500 <= code <= 4999


class ErrorCode(str, Enum):
    """The ``code`` of an ``error`` frame. Temporary codes may succeed if retried."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_OP = "unknown_op"
    BAD_FIELD = "bad_field"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    UNSUPPORTED_VERSION = "unsupported_version"
    AUTH_MISSING = "auth_missing"
    AUTH_INVALID = "auth_invalid"
    AUTH_EXPIRED = "auth_expired"
    FORBIDDEN = "forbidden"
    BAD_CHANNEL = "bad_channel"
    TOO_MANY_CHANNELS = "too_many_channels"
    PUBLISH_NOT_ALLOWED = "publish_not_allowed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @property
    def temporary(self) -> bool:
        """Whether retrying the same request later may succeed."""
        return _TEMPORARY[self.value]


_TEMPORARY = {spec.code: spec.temporary for spec in ERROR_CODES}


class Mode(str, Enum):
    """How a subscription wants its messages when it falls behind.

    ``all``: every message in order; if the server cannot keep them all it sends a
    ``gap`` marker. ``latest``: only the latest value counts; a slow client gets one
    ``conflated`` message per channel standing for the ones it skipped.
    """

    ALL = "all"
    LATEST = "latest"


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a channel's stream: its epoch and a sequence number."""

    epoch: str
    seq: int


def validate_channel(name: object) -> str | None:
    """Why ``name`` is not a valid channel name, or ``None`` when it is valid.

    A channel name is 1-128 characters of dot-separated segments made of
    ``A-Z a-z 0-9 _ - : @`` (``prices.EURUSD``, ``signals.trend-v2``).
    """
    if not isinstance(name, str):
        return "must be a string"
    if not 1 <= len(name) <= _MAX_CHANNEL_LEN:
        return f"must be 1 to {_MAX_CHANNEL_LEN} characters"
    if not _CHANNEL_RE.match(name):
        return "must be dot-separated segments of A-Z a-z 0-9 _ - : @"
    return None


# ---------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send this text frame to the peer."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code and reason (after sending what came before)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """The peer said hello: authenticate ``token``, then call ``hello_accepted``/``_refused``."""

    id: str | int
    token: str | None
    client_name: str
    client_version: str


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """One channel of a subscribe request."""

    channel: str
    mode: Mode | None
    since: Position | None


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """Subscribe to ``channels``; answer with ``subscribed`` or ``refused``."""

    id: str | int
    channels: tuple[ChannelRequest, ...]


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """Stop sending these channels (the session already acknowledged it)."""

    id: str | int
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """The peer publishes ``data`` on ``channel``; answer with ``published`` or ``refused``."""

    id: str | int
    channel: str
    data: Any


Action = Union[  # noqa: UP007 (a runtime alias; py3.10 needs Union here)
    Send, Close, HelloRequest, SubscribeRequest, UnsubscribeRequest, PublishRequest
]


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The outcome of subscribing one channel, for the ack.

    ``position`` is where the channel's stream stands now (``None`` when nothing was
    ever published); ``recovered`` says whether the ``since`` position could be served
    exactly (``None`` when no ``since`` was asked).
    """

    channel: str
    mode: Mode
    position: Position | None
    recovered: bool | None


# ---------------------------------------------------------------------------
# Limits and the token bucket


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits (and the server-wide connection limit).

    ``rate`` inbound frames per second with bursts of ``burst``; a peer that keeps
    sending after the bucket is empty gets ``rate_limited`` errors and is closed with
    4002 once its debt reaches another ``burst``.
    """

    max_frame_bytes: int = 64 * 1024
    max_channels: int = 200
    rate: float = 50.0
    burst: int = 100
    hello_timeout: float = 10.0
    max_connections: int = 10_000

    def __post_init__(self) -> None:
        _validate.integer("max_frame_bytes", self.max_frame_bytes, minimum=256)
        _validate.integer("max_channels", self.max_channels, minimum=1)
        _validate.integer("burst", self.burst, minimum=1)
        _validate.integer("max_connections", self.max_connections, minimum=1)
        _validate.positive("rate", self.rate)
        _validate.positive("hello_timeout", self.hello_timeout)


class TokenBucket:
    """A token bucket driven by the caller's clock (``now`` in seconds).

    :meth:`take` returns ``True`` when a token was available. When it was not, the
    bucket goes into debt (bounded by :attr:`flooding`, which the caller acts on).
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token; ``False`` when none was left (the debt grows by one)."""
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
        self._tokens -= 1.0
        return self._tokens >= 0.0

    @property
    def flooding(self) -> bool:
        """Whether the debt reached another full burst: the peer ignores rate errors."""
        return self._tokens <= -self._burst

    def retry_after(self) -> float:
        """Seconds until one token is available again."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


# ---------------------------------------------------------------------------
# Frames


def error_frame(
    request_id: str | int | None,
    code: ErrorCode,
    message: str,
    *,
    channel: str | None = None,
    retry_after: float | None = None,
) -> str:
    """The text of an ``error`` frame."""
    frame: dict[str, Any] = {
        "type": "error",
        "id": request_id,
        "code": code.value,
        "message": message,
        "temporary": code.temporary,
    }
    if channel is not None:
        frame["channel"] = channel
    if retry_after is not None:
        frame["retry_after"] = round(retry_after, 3)
    return dumps(frame)


def _position_dict(position: Position | None) -> dict[str, Any] | None:
    return None if position is None else {"epoch": position.epoch, "seq": position.seq}


class _BadRequest(Exception):
    def __init__(self, code: ErrorCode, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel


def _request_id(frame: Mapping[str, Any]) -> str | int:
    rid = frame.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise _BadRequest(ErrorCode.BAD_FIELD, "'id' must be a string or an integer")
    if isinstance(rid, str) and not 1 <= len(rid) <= _MAX_ID_LEN:
        raise _BadRequest(ErrorCode.BAD_FIELD, f"'id' must be 1 to {_MAX_ID_LEN} characters")
    if isinstance(rid, int) and not 0 <= rid < 2**53:
        raise _BadRequest(ErrorCode.BAD_FIELD, "'id' must be an integer in 0..2**53-1")
    return rid


def _short_str(frame: Mapping[str, Any], key: str, limit: int, default: str = "") -> str:
    value = frame.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise _BadRequest(ErrorCode.BAD_FIELD, f"'{key}' must be a string of <= {limit} chars")
    return value


def _channel(value: object) -> str:
    if not isinstance(value, str):
        raise _BadRequest(ErrorCode.BAD_FIELD, "a channel name must be a string")
    why = validate_channel(value)
    if why is not None:
        shown = value if isinstance(value, str) and len(value) <= _MAX_CHANNEL_LEN else None
        raise _BadRequest(ErrorCode.BAD_CHANNEL, f"channel name {why}", shown)
    assert isinstance(value, str)
    return value


def _since(value: object, channel: str) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _BadRequest(ErrorCode.BAD_FIELD, "'since' must be an object {epoch, seq}", channel)
    epoch, seq = value.get("epoch"), value.get("seq")
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= _MAX_ID_LEN:
        raise _BadRequest(ErrorCode.BAD_FIELD, "'since.epoch' must be a short string", channel)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise _BadRequest(ErrorCode.BAD_FIELD, "'since.seq' must be an integer >= 0", channel)
    return Position(epoch, seq)


def _channel_requests(frame: Mapping[str, Any], max_count: int) -> tuple[ChannelRequest, ...]:
    raw = frame.get("channels")
    if not isinstance(raw, list) or not raw:
        raise _BadRequest(ErrorCode.BAD_FIELD, "'channels' must be a non-empty list")
    if len(raw) > max_count:
        raise _BadRequest(
            ErrorCode.TOO_MANY_CHANNELS, f"at most {max_count} channels per connection"
        )
    out: dict[str, ChannelRequest] = {}
    for item in raw:
        if isinstance(item, str):
            name = _unique(_channel(item), out)
            out[name] = ChannelRequest(name, None, None)
            continue
        if not isinstance(item, Mapping):
            raise _BadRequest(ErrorCode.BAD_FIELD, "each channel must be a name or an object")
        name = _unique(_channel(item.get("channel")), out)
        mode_raw = item.get("mode")
        mode: Mode | None
        if mode_raw is None:
            mode = None
        elif mode_raw in ("all", "latest"):
            mode = Mode(mode_raw)
        else:
            raise _BadRequest(ErrorCode.BAD_FIELD, "'mode' must be 'all' or 'latest'", name)
        out[name] = ChannelRequest(name, mode, _since(item.get("since"), name))
    return tuple(out.values())


def _echo_id(frame: Mapping[str, Any]) -> str | int | None:
    """The id to echo in an error: the frame's id when it is a valid one, else ``None``."""
    try:
        return _request_id(frame)
    except _BadRequest:
        return None


def _unique(name: str, seen: Mapping[str, object]) -> str:
    # Refused rather than collapsed: the ack lists one entry per requested channel.
    if name in seen:
        raise _BadRequest(ErrorCode.BAD_FIELD, "a channel is listed twice", name)
    return name


def _peek_id(text: str | None, limit: int) -> str | int | None:
    """The request id of a frame we refuse anyway (so the client can match the error)."""
    if text is None or len(text) > limit:
        return None
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict):
        return None
    return _echo_id(frame)


# ---------------------------------------------------------------------------
# The session


@dataclass
class _State:
    authenticated: bool = False
    hello_pending: bool = False
    closed: bool = False
    channels: dict[str, Mode] = field(default_factory=dict)
    pending: dict[str | int, tuple[str, ...]] = field(default_factory=dict)


class Session:
    """One connection's protocol state machine (no I/O; see the module docstring).

    ``require_hello``: commands other than ``hello``/``ping`` are refused with
    ``not_authenticated`` until a hello was accepted, and a connection that has not
    said hello by ``opened_at + limits.hello_timeout`` is closed with 4003 (see
    :meth:`poll`). ``allow_publish`` enables the ``publish`` command.
    """

    def __init__(
        self,
        *,
        now: float,
        limits: Limits | None = None,
        require_hello: bool = True,
        allow_publish: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        self.require_hello = require_hello
        self.allow_publish = allow_publish
        self._opened_at = now
        self._bucket = TokenBucket(self.limits.rate, self.limits.burst, now)
        self._state = _State(authenticated=not require_hello)

    # -- state the I/O layer reads

    @property
    def authenticated(self) -> bool:
        """Whether a hello was accepted (or none is required)."""
        return self._state.authenticated

    @property
    def closed(self) -> bool:
        """Whether the session decided to close."""
        return self._state.closed

    @property
    def channels(self) -> Mapping[str, Mode]:
        """The subscribed channels and their modes."""
        return self._state.channels

    # -- inbound

    def receive_text(self, text: str, now: float) -> list[Action]:
        """Handle one inbound text frame received at ``now``."""
        if self._state.closed:
            return []
        limited = self._rate(now, text)
        if limited is not None:
            return limited
        if len(text) > self.limits.max_frame_bytes or (
            len(text) * 4 > self.limits.max_frame_bytes
            and len(text.encode("utf-8", "surrogatepass")) > self.limits.max_frame_bytes
        ):
            # As the WebSocket layer does for a frame over its size limit: 1009, no reply.
            return self._close(CloseCode.MESSAGE_TOO_BIG)
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            return [Send(error_frame(None, ErrorCode.BAD_JSON, "the frame is not valid JSON"))]
        if not isinstance(frame, dict):
            return [Send(error_frame(None, ErrorCode.BAD_FRAME, "a frame must be a JSON object"))]
        try:
            return self._dispatch(frame, now)
        except _BadRequest as bad:
            reply = Send(error_frame(_echo_id(frame), bad.code, bad.message, channel=bad.channel))
            if frame.get("op") == "hello" and bad.code is ErrorCode.BAD_FIELD:
                # A malformed hello is a client bug no retry fixes: close with a 45xx code,
                # so the client stops instead of reconnecting on the hello timeout forever.
                return [reply, *self._close(CloseCode.PROTOCOL_VIOLATION)]
            return [reply]

    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        """Handle one inbound binary frame: refused, the protocol is text only."""
        if self._state.closed:
            return []
        limited = self._rate(now)
        if limited is not None:
            return limited
        return [Send(error_frame(None, ErrorCode.BINARY_NOT_SUPPORTED, "send JSON in text frames"))]

    def poll(self, now: float) -> list[Action]:
        """Time-driven decisions: close with 4003 when the hello deadline passed."""
        if self._state.closed or self._state.authenticated or self._state.hello_pending:
            return []
        if now - self._opened_at >= self.limits.hello_timeout:
            return self._close(CloseCode.HELLO_TIMEOUT)
        return []

    def hello_deadline(self) -> float | None:
        """When :meth:`poll` will close for a missing hello (``None``: no deadline)."""
        if self._state.authenticated or self._state.closed:
            return None
        return self._opened_at + self.limits.hello_timeout

    def _close(self, code: CloseCode) -> list[Action]:
        self._state.closed = True
        return [Close(int(code), code.reason)]

    def _rate(self, now: float, text: str | None = None) -> list[Action] | None:
        if self._bucket.take(now):
            return None
        rid = _peek_id(text, self.limits.max_frame_bytes)
        error = Send(
            error_frame(
                rid,
                ErrorCode.RATE_LIMITED,
                f"at most {self.limits.rate:g} frames per second",
                retry_after=self._bucket.retry_after(),
            )
        )
        if self._bucket.flooding:
            # The last error before 4002 has the same shape as every other one.
            return [error, *self._close(CloseCode.RATE_LIMITED)]
        return [error]

    def _dispatch(self, frame: Mapping[str, Any], now: float) -> list[Action]:
        op = frame.get("op")
        if not isinstance(op, str):
            raise _BadRequest(ErrorCode.BAD_FIELD, "'op' must be a string")
        if op == "ping":
            rid = _request_id(frame) if "id" in frame else None
            return [Send(dumps({"type": "pong", "id": rid}))]
        if op == "hello":
            return self._hello(frame)
        if op not in ("subscribe", "unsubscribe", "publish"):
            raise _BadRequest(
                ErrorCode.UNKNOWN_OP,
                "op must be one of hello, subscribe, unsubscribe, ping, publish",
            )
        rid = _request_id(frame)
        if not self._state.authenticated:
            raise _BadRequest(ErrorCode.NOT_AUTHENTICATED, "send hello first")
        if op == "subscribe":
            return self._subscribe(rid, frame)
        if op == "unsubscribe":
            return self._unsubscribe(rid, frame)
        return self._publish(rid, frame)

    def _hello(self, frame: Mapping[str, Any]) -> list[Action]:
        rid = _request_id(frame)
        if self._state.hello_pending or (self.require_hello and self._state.authenticated):
            raise _BadRequest(ErrorCode.ALREADY_AUTHENTICATED, "hello was already sent")
        version = frame.get("protocol", PROTOCOL_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise _BadRequest(ErrorCode.BAD_FIELD, "'protocol' must be an integer")
        if version != PROTOCOL_VERSION:
            return [
                Send(
                    error_frame(
                        rid, ErrorCode.UNSUPPORTED_VERSION, f"this server speaks {PROTOCOL_VERSION}"
                    )
                ),
                *self._close(CloseCode.UNSUPPORTED_VERSION),
            ]
        token = frame.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN):
            raise _BadRequest(ErrorCode.BAD_FIELD, f"'token' must be a string <= {_MAX_TOKEN_LEN}")
        client = frame.get("client", {})
        if not isinstance(client, Mapping):
            raise _BadRequest(ErrorCode.BAD_FIELD, "'client' must be an object {name, version}")
        name = _short_str(client, "name", _MAX_NAME_LEN)
        ver = _short_str(client, "version", _MAX_NAME_LEN)
        self._state.hello_pending = True
        return [HelloRequest(rid, token, name, ver)]

    def _subscribe(self, rid: str | int, frame: Mapping[str, Any]) -> list[Action]:
        if rid in self._state.pending:
            raise _BadRequest(ErrorCode.BAD_FIELD, "a request with this id is still pending")
        requests = _channel_requests(frame, self.limits.max_channels)
        wanted = {r.channel for r in requests}
        busy = set(self._state.channels)
        for names in self._state.pending.values():
            busy.update(names)
        if len(busy | wanted) > self.limits.max_channels:
            raise _BadRequest(
                ErrorCode.TOO_MANY_CHANNELS,
                f"at most {self.limits.max_channels} channels per connection",
            )
        self._state.pending[rid] = tuple(wanted)
        return [SubscribeRequest(rid, requests)]

    def _unsubscribe(self, rid: str | int, frame: Mapping[str, Any]) -> list[Action]:
        raw = frame.get("channels")
        if not isinstance(raw, list) or not raw or len(raw) > self.limits.max_channels:
            raise _BadRequest(ErrorCode.BAD_FIELD, "'channels' must be a non-empty list of names")
        seen: dict[str, None] = {}
        for c in raw:
            seen[_unique(_channel(c), seen)] = None
        names = tuple(seen)
        removed = [n for n in names if self._state.channels.pop(n, None) is not None]
        ack = dumps({"type": "ack", "id": rid, "op": "unsubscribe", "channels": list(names)})
        return [UnsubscribeRequest(rid, tuple(removed)), Send(ack)]

    def _publish(self, rid: str | int, frame: Mapping[str, Any]) -> list[Action]:
        if not self.allow_publish:
            raise _BadRequest(ErrorCode.PUBLISH_NOT_ALLOWED, "this server does not take publishes")
        channel = _channel(frame.get("channel"))
        if "data" not in frame:
            raise _BadRequest(ErrorCode.BAD_FIELD, "'data' is required", channel)
        return [PublishRequest(rid, channel, frame["data"])]

    # -- answers from the I/O layer

    def hello_accepted(
        self,
        request_id: str | int,
        *,
        session_id: str,
        heartbeat: float,
        server: str,
        user: str | None = None,
    ) -> list[Action]:
        """The authenticator accepted the hello: the ``welcome`` frame."""
        self._state.hello_pending = False
        self._state.authenticated = True
        welcome = {
            "type": "welcome",
            "id": request_id,
            "protocol": PROTOCOL_VERSION,
            "session": session_id,
            "server": server,
            "user": user,
            "heartbeat": heartbeat,
            "limits": {
                "max_frame_bytes": self.limits.max_frame_bytes,
                "max_channels": self.limits.max_channels,
                "rate": self.limits.rate,
                "burst": self.limits.burst,
            },
        }
        return [Send(dumps(welcome))]

    def hello_refused(self, request_id: str | int, code: ErrorCode, message: str) -> list[Action]:
        """The authenticator refused: an error frame and a close (4501 expired, else 4500)."""
        self._state.hello_pending = False
        close = CloseCode.TOKEN_EXPIRED if code is ErrorCode.AUTH_EXPIRED else CloseCode.AUTH_FAILED
        return [Send(error_frame(request_id, code, message)), *self._close(close)]

    def token_expired(self) -> list[Action]:
        """A connected client's token ran out: an ``auth_expired`` error (id null), close 4501."""
        if self._state.closed:
            return []
        return [
            Send(error_frame(None, ErrorCode.AUTH_EXPIRED, "token expired")),
            *self._close(CloseCode.TOKEN_EXPIRED),
        ]

    def subscribed(self, request_id: str | int, results: Sequence[SubscribeResult]) -> list[Action]:
        """The channels are subscribed: the ``ack`` frame (send it before any message)."""
        self._state.pending.pop(request_id, None)
        for r in results:
            self._state.channels[r.channel] = r.mode
        ack = {
            "type": "ack",
            "id": request_id,
            "op": "subscribe",
            "channels": [
                {
                    "channel": r.channel,
                    "mode": r.mode.value,
                    "position": _position_dict(r.position),
                    "recovered": r.recovered,
                }
                for r in results
            ],
        }
        return [Send(dumps(ack))]

    def refused(
        self,
        request_id: str | int,
        code: ErrorCode,
        message: str,
        *,
        channel: str | None = None,
        retry_after: float | None = None,
    ) -> list[Action]:
        """A subscribe or publish was refused (whole request): the ``error`` frame."""
        self._state.pending.pop(request_id, None)
        return [
            Send(error_frame(request_id, code, message, channel=channel, retry_after=retry_after))
        ]

    def published(self, request_id: str | int, channel: str, position: Position) -> list[Action]:
        """A client publish was stored: the ``ack`` frame with its position."""
        ack = {
            "type": "ack",
            "id": request_id,
            "op": "publish",
            "channel": channel,
            "position": _position_dict(position),
        }
        return [Send(dumps(ack))]

    def heartbeat(self, now_wall: float, positions: Mapping[str, Position | None]) -> Send:
        """The idle-connection heartbeat: the latest position of each subscribed channel.

        A channel that never had a message has no position and is left out (the
        values are never ``null``).
        """
        return Send(
            dumps(
                {
                    "type": "heartbeat",
                    "time": round(now_wall, 6),
                    "channels": {
                        ch: {"epoch": p.epoch, "seq": p.seq}
                        for ch, p in positions.items()
                        if p is not None
                    },
                }
            )
        )

    def drain(self, retry_after: float, reason: str = "shutdown") -> Send:
        """The drain notice sent before a graceful shutdown."""
        return Send(dumps({"type": "drain", "retry_after": retry_after, "reason": reason}))
