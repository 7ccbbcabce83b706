"""The in-process broker: one server process, history in memory (the default)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ...errors import ClosedError
from .._channels import ChannelStore, Recovery
from .._protocol import Position

if TYPE_CHECKING:
    from . import Deliver

__all__ = ["LocalBroker"]


class LocalBroker:
    """Numbers, stores (last ``history`` per channel) and delivers messages in-process.

    A new process starts new epochs, so clients that recover across a restart get
    ``recovered=False`` and a snapshot, never a silently wrong sequence.
    """

    def __init__(self, *, history: int = 1000, max_channels: int = 100_000) -> None:
        self._store = ChannelStore(history=history, max_channels=max_channels)
        self._deliver: Deliver | None = None
        self._closed = False

    async def start(self, deliver: Deliver) -> None:
        """Remember where to deliver."""
        self._deliver = deliver

    async def publish(self, channel: str, data_json: str, ts: float) -> Position:
        """Append to the channel's log and deliver at once (in order)."""
        if self._closed:
            raise ClosedError("broker is closed")
        log = self._store.log(channel, create=True)
        assert log is not None
        msg = log.append(data_json, ts, time.time())
        if self._deliver is not None:
            self._deliver(msg)
        return msg.position

    async def recover(self, channel: str, since: Position | None) -> Recovery:
        """Answer from the in-memory history."""
        return self._store.recover(channel, since)

    def reset(self, channel: str) -> None:
        """Start a new epoch for ``channel`` (clients will get ``recovered=False``)."""
        log = self._store.log(channel)
        if log is not None:
            log.reset()

    async def close(self) -> None:
        """Refuse further publishes."""
        self._closed = True
        self._deliver = None
