"""The file bridge's data types: what a user sends, receives and reads.

:class:`Message`, :class:`Reply`, :class:`ReplyStatus`, :class:`Snapshot`,
:class:`PollConfig`, :class:`BridgeStats`; the checks that turn a decoded frame into a
:class:`Message` (:func:`parse_message`); and the registry of requests waiting for
their reply (:class:`PendingRequests`), shared by the sending and receiving sides.
No I/O here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from .. import _validate as check
from ..errors import ConfigError
from ._folders import parse_message_name, valid_sender
from ._frame import CorruptFrameError, Frame, valid_id

__all__ = [
    "KIND_RE",
    "BridgeStats",
    "Counters",
    "Handler",
    "Message",
    "PendingRequests",
    "PollConfig",
    "Reply",
    "ReplyStatus",
    "Snapshot",
    "Waiter",
    "parse_message",
    "redelivered",
]

KIND_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What a message ``kind`` may be (spec section 5)."""
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
        busy = check.positive("busy", self.busy)
        idle = check.positive("idle", self.idle)
        if busy > idle:
            raise ConfigError("busy", "must be > 0 and <= idle", self.busy)
        check.non_negative("busy_window", self.busy_window)
        check.number("backoff", self.backoff, minimum=1.0)


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


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """Counters of one bridge instance since it started (a snapshot: see
    :meth:`FileBridge.stats`).

    ``bad`` counts entries moved to ``bad/`` (corrupt frames and odd entries such as a
    directory or a FIFO named like a message); ``stuck`` counts entries that could
    be neither handled nor moved to ``bad/`` (each logged once, then left alone).
    ``incomplete`` is not a counter but the number of files in ``new/`` waited for
    right now (incomplete or not yet claimable, within ``grace``).
    """

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
    stuck: int = 0
    incomplete: int = 0


@dataclass(slots=True)
class Counters:
    """The live counters behind :class:`BridgeStats` (same fields, mutable), shared by
    the writer, the reader and the receiver of one bridge."""

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
    stuck: int = 0

    def snapshot(self, incomplete: int) -> BridgeStats:
        """A frozen copy, with the ``incomplete`` gauge."""
        counts = {f.name: getattr(self, f.name) for f in fields(self)}
        return BridgeStats(**counts, incomplete=incomplete)


Handler = Callable[[Message], Awaitable["Reply | None"]]
"""An incoming-message handler: returns a :class:`Reply` for a request, else ``None``."""


def parse_message(name: str, frame: Frame) -> Message:
    """The message a checked frame carries, or :class:`CorruptFrameError` (code
    ``name_mismatch`` or ``bad_message``) when its fields break the spec."""
    parsed = parse_message_name(name)
    if parsed is None:
        raise CorruptFrameError("name_mismatch", "not a message file name")
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
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
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


def redelivered(message: Message) -> Message:
    """``message`` flagged as handed over again after a crash (``redelivered=True``)."""
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


@dataclass(frozen=True, slots=True)
class Waiter:
    """What the receiver needs to know of a request waiting for its reply."""

    final: bool
    """The waiter wants a final reply (an interim ``accepted`` does not end its wait)."""
    done: bool
    """The waiter already has its reply."""


class PendingRequests:
    """Requests this bridge sent and still waits for, by request id."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[asyncio.Future[Reply], bool]] = {}

    def wait_for(self, request_id: str, final: bool) -> asyncio.Future[Reply]:
        """The future of ``request_id`` (a new one unless it is already waited for)."""
        known = self._waiting.get(request_id)
        if known is None:
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            known = self._waiting[request_id] = (future, final)
        return known[0]

    def forget(self, request_id: str, future: asyncio.Future[Reply]) -> None:
        """Stop waiting for ``request_id`` (only if ``future`` is still its waiter)."""
        known = self._waiting.get(request_id)
        if known is not None and known[0] is future:
            del self._waiting[request_id]

    def view(self, request_id: str) -> Waiter | None:
        """What the receiver needs to know of the waiter of ``request_id``, if any."""
        known = self._waiting.get(request_id)
        if known is None:
            return None
        return Waiter(final=known[1], done=known[0].done())

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._waiting

    def resolve(self, request_id: str, reply: Reply) -> None:
        """Give ``reply`` to the waiter of ``request_id`` (if it still waits)."""
        known = self._waiting.get(request_id)
        if known is not None and not known[0].done():
            known[0].set_result(reply)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every waiter with ``exc`` (the bridge is closing)."""
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(exc)

    def __iter__(self) -> Iterator[str]:
        return iter(self._waiting)
