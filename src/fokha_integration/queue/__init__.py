"""SignalQueue: dedup, a durable outbox and independent fan-out to sinks.

Stores: :class:`MemoryOutboxStore` (default), :class:`SQLiteOutboxStore` (one
host, survives crashes) and ``RedisStreamsStore`` (several processes or hosts;
import it from :mod:`fokha_integration.queue.redis`, it needs the ``[redis]``
extra). Sinks: :class:`WebhookSink`, :class:`CallableSink`, :class:`WebSocketSink`,
:class:`FileBridgeSink`, or anything implementing :class:`Sink`.
"""

from ._queue import SignalQueue, SinkConfig
from ._sinks import (
    BridgeReply,
    BridgeSender,
    CallableSink,
    ChannelPublisher,
    FileBridgeSink,
    WebhookSink,
    WebSocketSink,
)
from ._sqlite import SQLiteOutboxStore
from ._store import MemoryOutboxStore, OutboxStore
from ._types import (
    AttemptRecord,
    ClaimOutcome,
    DeadLetter,
    Deduper,
    DeliveryFailedError,
    DeliveryResult,
    Guarantee,
    MemoryDeduper,
    OutboxEntry,
    PublishResult,
    Sink,
    SinkMetrics,
)

__all__ = [
    "AttemptRecord",
    "BridgeReply",
    "BridgeSender",
    "CallableSink",
    "ChannelPublisher",
    "ClaimOutcome",
    "DeadLetter",
    "Deduper",
    "DeliveryFailedError",
    "DeliveryResult",
    "FileBridgeSink",
    "Guarantee",
    "MemoryDeduper",
    "MemoryOutboxStore",
    "OutboxEntry",
    "OutboxStore",
    "PublishResult",
    "SQLiteOutboxStore",
    "SignalQueue",
    "Sink",
    "SinkConfig",
    "SinkMetrics",
    "WebSocketSink",
    "WebhookSink",
]
