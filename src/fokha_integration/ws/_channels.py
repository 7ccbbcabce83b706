"""Channel streams: per-channel sequence and epoch, bounded history, latest value, recovery.

A :class:`ChannelLog` numbers the messages of one channel (``seq`` 1, 2, 3, ... within
an ``epoch``; a new epoch starts when the stream is reset, e.g. a fresh in-memory
broker after a restart), keeps the last ``history`` messages in a ring and answers
the recovery question with :meth:`ChannelLog.recover`: given the position a client
last saw, either the exact messages it missed, or - when the history no longer
reaches back or the epoch changed - a snapshot of the latest value marked
``recovered=False``.

:func:`make_message` serialises a message's ``update`` frame once; every
subscriber gets the same bytes. Conflated and gap frames are built per slow client
(:func:`conflated_frame`, :func:`gap_frame`).

History is bounded by count *and* optionally by age (:class:`HistoryPolicy`), sized
per channel by patterns (:class:`ChannelStore`). The number of channels is bounded
too: past ``max_channels`` the channel idle the longest is evicted when it has been
idle for ``channel_idle`` seconds (a later subscriber gets a new epoch and
``recovered=false``, never a wrong sequence); when none is idle enough, publishing
to a new channel raises :class:`ChannelLimitError`.

No I/O here; the in-memory broker and the Redis broker use these pieces.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import _validate
from ..errors import ConfigError, FokhaError
from ._protocol import Position, dumps

__all__ = [
    "ChannelLimitError",
    "ChannelLog",
    "ChannelStore",
    "HistoryPolicy",
    "Message",
    "Recovery",
    "conflated_frame",
    "gap_frame",
    "make_message",
    "new_epoch",
    "recover_from",
    "replay_frame",
]


class ChannelLimitError(FokhaError):
    """A new channel was refused: the broker holds ``limit`` channels and none is idle
    long enough to be evicted. ``channel`` is the refused name."""

    def __init__(self, channel: str, limit: int) -> None:
        self.channel = channel
        self.limit = limit
        super().__init__(f"channel {channel!r} refused: {limit} channels in use, none idle")


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much history a channel keeps: at most ``count`` messages and, when
    ``max_age`` is set, none older than ``max_age`` seconds (by the broker's clock).

    Both bounds hold at once: size ``count`` for the age at your peak rate
    (``max_age x messages/s``) or the count cuts the age short.
    """

    count: int = 1000
    max_age: float | None = None

    def __post_init__(self) -> None:
        _validate.integer("history.count", self.count, minimum=1)
        if self.max_age is not None:
            _validate.positive("history.max_age", self.max_age)


def new_epoch() -> str:
    """A fresh random epoch id (12 URL-safe characters)."""
    return secrets.token_urlsafe(9)


@dataclass(frozen=True, slots=True)
class Message:
    """One published message of a channel, with its ``update`` frame serialised once."""

    channel: str
    epoch: str
    seq: int
    ts: float
    data_json: str
    frame: bytes
    stored_at: float = 0.0

    @property
    def position(self) -> Position:
        """Where this message sits in its channel's stream."""
        return Position(self.epoch, self.seq)


def _frame(
    channel: str,
    epoch: str,
    seq: int,
    kind: str,
    ts: float,
    sent: float,
    data_json: str,
    extra: str = "",
) -> bytes:
    # Built by concatenation so the payload's JSON text is reused, not re-encoded.
    return (
        f'{{"type":"message","channel":{json.dumps(channel)},"epoch":{json.dumps(epoch)},'
        f'"seq":{seq},"kind":"{kind}","ts":{ts!r},"sent":{sent!r}{extra},"data":{data_json}}}'
    ).encode()


def make_message(
    channel: str, epoch: str, seq: int, ts: float, data_json: str, sent: float
) -> Message:
    """A message and its ``update`` frame (``sent``: when the server sent it out)."""
    return Message(
        channel,
        epoch,
        seq,
        ts,
        data_json,
        _frame(channel, epoch, seq, "update", ts, sent, data_json),
        sent,
    )


def replay_frame(message: Message, sent: float) -> bytes:
    """The ``update`` frame of ``message`` replayed at ``sent`` (recovery stamps its own time)."""
    return _frame(
        message.channel, message.epoch, message.seq, "update", message.ts, sent, message.data_json
    )


def snapshot_frame(message: Message, sent: float, recovered: bool | None) -> bytes:
    """A ``snapshot`` frame of ``message`` (the latest value on subscribe or recovery miss)."""
    extra = "" if recovered is None else f',"recovered":{"true" if recovered else "false"}'
    return _frame(
        message.channel, message.epoch, message.seq, "snapshot", message.ts, sent,
        message.data_json, extra,
    )  # fmt: skip


def conflated_frame(message: Message, first_seq: int, sent: float) -> bytes:
    """A ``conflated`` frame: ``message`` stands for seqs ``first_seq`` .. ``message.seq``."""
    return _frame(
        message.channel, message.epoch, message.seq, "conflated", message.ts, sent,
        message.data_json, f',"from":{first_seq}',
    )  # fmt: skip


def gap_frame(channel: str, epoch: str, first_seq: int, last_seq: int, sent: float) -> bytes:
    """A ``gap`` frame: seqs ``first_seq`` .. ``last_seq`` were not delivered; recover them."""
    return dumps(
        {
            "type": "message",
            "channel": channel,
            "epoch": epoch,
            "seq": last_seq,
            "kind": "gap",
            "from": first_seq,
            "ts": sent,
            "sent": sent,
            "data": None,
        }
    ).encode()


@dataclass(frozen=True, slots=True)
class Recovery:
    """The answer to "what did I miss since ``since``?".

    ``recovered`` is ``True`` when ``messages`` are exactly the missed ones in order,
    ``False`` when the history did not reach back (``messages`` is then the latest
    value as a snapshot, or empty), ``None`` when no ``since`` was asked (``messages``
    is the latest value, if any). ``position`` is where the stream stands.
    """

    position: Position | None
    recovered: bool | None
    messages: tuple[Message, ...]


def recover_from(
    since: Position | None, epoch: str | None, history: Iterable[Message], latest: Message | None
) -> Recovery:
    """The recovery decision, shared by every broker (``history`` in ascending seq)."""
    if latest is None or epoch is None:
        return Recovery(None, None if since is None else False, ())
    position = latest.position
    if since is None:
        return Recovery(position, None, (latest,))
    if since.epoch != epoch or since.seq > latest.seq:
        return Recovery(position, False, (latest,))
    if since.seq == latest.seq:
        return Recovery(position, True, ())
    missed = tuple(m for m in history if m.seq > since.seq)
    if missed and missed[0].seq == since.seq + 1 and missed[-1].seq == latest.seq:
        return Recovery(position, True, missed)
    return Recovery(position, False, (latest,))


class ChannelLog:
    """One channel's stream: numbering, a ring of recent messages (see :class:`HistoryPolicy`),
    and the latest value (kept even when the age bound emptied the ring)."""

    __slots__ = ("_latest", "_ring", "channel", "epoch", "max_age", "seq")

    def __init__(
        self,
        channel: str,
        *,
        history: int | HistoryPolicy,
        epoch: str | None = None,
    ) -> None:
        policy = history if isinstance(history, HistoryPolicy) else HistoryPolicy(history)
        self.channel = channel
        self.epoch = epoch or new_epoch()
        self.seq = 0
        self.max_age = policy.max_age
        self._ring: deque[Message] = deque(maxlen=policy.count)
        self._latest: Message | None = None

    def append(self, data_json: str, ts: float, sent: float) -> Message:
        """Number and store the next message (``sent``: now, by the broker's clock)."""
        self.seq += 1
        msg = make_message(self.channel, self.epoch, self.seq, ts, data_json, sent)
        self._ring.append(msg)
        self._latest = msg
        self.expire(sent)
        return msg

    def expire(self, now: float) -> None:
        """Drop messages older than ``max_age`` at ``now`` (the latest value stays)."""
        if self.max_age is None:
            return
        horizon = now - self.max_age
        ring = self._ring
        while ring and ring[0].stored_at < horizon:
            ring.popleft()

    @property
    def latest(self) -> Message | None:
        """The latest message, if any."""
        return self._latest

    def __len__(self) -> int:
        return len(self._ring)

    def recover(self, since: Position | None, now: float | None = None) -> Recovery:
        """See :func:`recover_from` (``now``: expire by age first)."""
        if now is not None:
            self.expire(now)
        return recover_from(since, self.epoch, self._ring, self._latest)

    def reset(self) -> None:
        """Start a new epoch (the stream was reset): history and numbering start over."""
        self.epoch = new_epoch()
        self.seq = 0
        self._ring.clear()
        self._latest = None


class ChannelStore:
    """All channel logs of one in-memory broker: per-channel history, bounded channels.

    ``history`` is the default :class:`HistoryPolicy` (an int: a count);
    ``rules`` are ``(pattern, policy)`` pairs, the first ``fnmatch`` match wins.
    ``max_channels`` bounds the number of channels; ``channel_idle`` is how long a
    channel must have gone without a publish before it may be evicted to make room.
    """

    def __init__(
        self,
        *,
        history: int | HistoryPolicy = 1000,
        rules: Sequence[tuple[str, HistoryPolicy]] = (),
        max_channels: int = 100_000,
        channel_idle: float = 3600.0,
    ) -> None:
        self.history = history if isinstance(history, HistoryPolicy) else HistoryPolicy(history)
        for rule in rules:
            if not (
                isinstance(rule, tuple)
                and len(rule) == 2
                and isinstance(rule[0], str)
                and isinstance(rule[1], HistoryPolicy)
            ):
                raise ConfigError("history_rules", "must be (pattern, HistoryPolicy) pairs", rule)
        self.rules = tuple(rules)
        self.max_channels = _validate.integer("max_channels", max_channels, minimum=1)
        self.channel_idle = _validate.non_negative("channel_idle", channel_idle)
        self.evicted = 0
        # Least recently published first: eviction looks at the head only.
        self._logs: OrderedDict[str, ChannelLog] = OrderedDict()

    def policy_for(self, channel: str) -> HistoryPolicy:
        """The history policy of ``channel`` (first matching rule, else the default)."""
        for pattern, policy in self.rules:
            if fnmatch.fnmatchcase(channel, pattern):
                return policy
        return self.history

    def __len__(self) -> int:
        return len(self._logs)

    def log(self, channel: str) -> ChannelLog | None:
        """The log of ``channel``, if it exists."""
        return self._logs.get(channel)

    def append(self, channel: str, data_json: str, ts: float, now: float) -> Message:
        """Append to ``channel`` (created, evicting an idle channel if needed)."""
        log = self._logs.get(channel)
        if log is None:
            if len(self._logs) >= self.max_channels:
                self._evict_idle(channel, now)
            log = self._logs[channel] = ChannelLog(channel, history=self.policy_for(channel))
        else:
            self._logs.move_to_end(channel)
        return log.append(data_json, ts, now)

    def _evict_idle(self, channel: str, now: float) -> None:
        oldest_name, oldest = next(iter(self._logs.items()))
        last = oldest.latest
        if last is not None and now - last.stored_at < self.channel_idle:
            raise ChannelLimitError(channel, self.max_channels)
        del self._logs[oldest_name]
        self.evicted += 1

    def recover(self, channel: str, since: Position | None, now: float | None = None) -> Recovery:
        """Recovery for ``channel`` (an unknown channel has no position)."""
        log = self._logs.get(channel)
        if log is None:
            return Recovery(None, None if since is None else False, ())
        return log.recover(since, now)
