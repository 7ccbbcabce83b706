"""The in-process broker: one server process, history in memory (the default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...clock import SYSTEM_CLOCK, Clock
from ...errors import ClosedError
from .._channels import ChannelStore, HistoryPolicy, Recovery
from .._protocol import Position

if TYPE_CHECKING:
    from . import Deliver

__all__ = ["LocalBroker"]


class LocalBroker:
    """Numbers, stores and delivers messages in-process.

    ``history``: the default per-channel history (an int is a count; a
    :class:`HistoryPolicy` adds an age bound); ``history_rules``: ``(pattern,
    HistoryPolicy)`` pairs sizing some channels differently (first match wins), e.g.
    ``[("signals.*", HistoryPolicy(count=1_500_000, max_age=600))]``.
    ``max_channels``/``channel_idle``: the channel bound and how long a channel must be
    idle before it may be evicted (see :class:`ChannelStore`). Time (message ages)
    comes from ``clock``.

    A new process starts new epochs, so clients that recover across a restart get
    ``recovered=False`` and a snapshot, never a silently wrong sequence.
    """

    def __init__(
        self,
        *,
        history: int | HistoryPolicy = 1000,
        history_rules: Sequence[tuple[str, HistoryPolicy]] = (),
        max_channels: int = 100_000,
        channel_idle: float = 3600.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = ChannelStore(
            history=history,
            rules=history_rules,
            max_channels=max_channels,
            channel_idle=channel_idle,
        )
        self._clock = clock
        self._deliver: Deliver | None = None
        self._closed = False

    @property
    def channels(self) -> int:
        """How many channels hold history now."""
        return len(self._store)

    @property
    def evicted(self) -> int:
        """How many idle channels were evicted to make room."""
        return self._store.evicted

    async def start(self, deliver: Deliver) -> None:
        """Remember where to deliver."""
        self._deliver = deliver

    async def publish(self, channel: str, data_json: str, ts: float) -> Position:
        """Append to the channel's log and deliver at once (in order).

        Raises :class:`~fokha_integration.ws.ChannelLimitError` when the channel is new,
        the broker is full and no channel is idle long enough to evict.
        """
        if self._closed:
            raise ClosedError("broker is closed")
        msg = self._store.append(channel, data_json, ts, self._clock.time())
        if self._deliver is not None:
            self._deliver(msg)
        return msg.position

    async def recover(self, channel: str, since: Position | None) -> Recovery:
        """Answer from the in-memory history."""
        return self._store.recover(channel, since, self._clock.time())

    def reset(self, channel: str) -> None:
        """Start a new epoch for ``channel`` (clients will get ``recovered=False``)."""
        log = self._store.log(channel)
        if log is not None:
            log.reset()

    async def close(self) -> None:
        """Refuse further publishes."""
        self._closed = True
        self._deliver = None
