"""Brokers: where a channel's messages get their sequence number, history and fan-out.

Every broker implements :class:`Broker`. :class:`LocalBroker` (in-process, the
default) serves one server process; ``RedisBroker`` (``fokha_integration.ws.brokers.redis``,
the ``[redis]`` extra) lets several server processes share channels: Redis Streams
hold the per-channel sequence and history, pub/sub carries the fan-out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .._channels import Message, Recovery
from .._protocol import Position
from .local import LocalBroker

__all__ = ["Broker", "Deliver", "LocalBroker"]

Deliver = Callable[[Message], None]
"""Called by a broker, on the event loop, with each message to fan out on this node."""


@runtime_checkable
class Broker(Protocol):
    """What the server needs from a broker.

    ``publish`` assigns the next sequence number, stores the message in the
    channel's bounded history and makes every node's ``deliver`` see it (in
    sequence order per channel). ``recover`` answers a reconnecting client.
    """

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering messages published anywhere to ``deliver``."""
        ...

    async def publish(self, channel: str, data_json: str, ts: float) -> Position:
        """Store and fan out one message (``data_json``: its JSON text)."""
        ...

    async def recover(self, channel: str, since: Position | None) -> Recovery:
        """The missed messages since ``since`` or a snapshot (see :class:`Recovery`)."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections."""
        ...
