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

No I/O here; the in-memory broker and the Redis broker use these pieces.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ._protocol import Position, dumps

__all__ = [
    "ChannelLog",
    "ChannelStore",
    "Message",
    "Recovery",
    "conflated_frame",
    "gap_frame",
    "make_message",
    "new_epoch",
    "recover_from",
]


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
    """One channel's stream: numbering, a ring of the last ``history`` messages, latest."""

    __slots__ = ("_ring", "channel", "epoch", "seq")

    def __init__(self, channel: str, *, history: int, epoch: str | None = None) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self.channel = channel
        self.epoch = epoch or new_epoch()
        self.seq = 0
        self._ring: deque[Message] = deque(maxlen=history)

    def append(self, data_json: str, ts: float, sent: float) -> Message:
        """Number and store the next message."""
        self.seq += 1
        msg = make_message(self.channel, self.epoch, self.seq, ts, data_json, sent)
        self._ring.append(msg)
        return msg

    @property
    def latest(self) -> Message | None:
        """The latest message, if any."""
        return self._ring[-1] if self._ring else None

    def recover(self, since: Position | None) -> Recovery:
        """See :func:`recover_from`."""
        return recover_from(since, self.epoch, self._ring, self.latest)

    def reset(self) -> None:
        """Start a new epoch (the stream was reset): history and numbering start over."""
        self.epoch = new_epoch()
        self.seq = 0
        self._ring.clear()


class ChannelStore:
    """All channel logs of one in-memory broker (bounded number of channels)."""

    def __init__(self, *, history: int = 1000, max_channels: int = 100_000) -> None:
        self.history = history
        self.max_channels = max_channels
        self._logs: dict[str, ChannelLog] = {}

    def log(self, channel: str, *, create: bool = False) -> ChannelLog | None:
        """The log of ``channel`` (created when ``create`` and there is room)."""
        log = self._logs.get(channel)
        if log is None and create:
            if len(self._logs) >= self.max_channels:
                raise OverflowError(f"more than {self.max_channels} channels")
            log = self._logs[channel] = ChannelLog(channel, history=self.history)
        return log

    def recover(self, channel: str, since: Position | None) -> Recovery:
        """Recovery for ``channel`` (an unknown channel has no position)."""
        log = self._logs.get(channel)
        if log is None:
            return Recovery(None, None if since is None else False, ())
        return log.recover(since)
