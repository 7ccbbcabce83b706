"""SignalQueue: dedup, a durable outbox and independent fan-out to sinks.

Stores: :class:`MemoryOutboxStore` (default), :class:`SQLiteOutboxStore` (one
host, survives crashes) and ``RedisStreamsStore`` (several processes or hosts;
import it from :mod:`fokha_integration.queue.redis`, it needs the ``[redis]``
extra; ``fokha_integration.queue.redis_streams`` is a deprecated alias).
Sinks: :class:`WebhookSink`, :class:`CallableSink`, :class:`WebSocketSink`,
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
from ._store import FastOutboxStore, MemoryOutboxStore, OutboxStore, WatchedOutboxStore
from ._types import (
    AttemptRecord,
    BadSinkResultError,
    ClaimOutcome,
    DeadLetter,
    Deduper,
    DeliveryFailedError,
    DeliveryResult,
    Guarantee,
    MemoryDeduper,
    OutboxEntry,
    PublishResult,
    QueueStats,
    Sink,
    SinkMetrics,
    SinkStats,
    memory_deduper,
)

__all__ = [
    "AttemptRecord",
    "BadSinkResultError",
    "BridgeReply",
    "BridgeSender",
    "CallableSink",
    "ChannelPublisher",
    "ClaimOutcome",
    "DeadLetter",
    "Deduper",
    "DeliveryFailedError",
    "DeliveryResult",
    "FastOutboxStore",
    "FileBridgeSink",
    "Guarantee",
    "MemoryDeduper",
    "MemoryOutboxStore",
    "OutboxEntry",
    "OutboxStore",
    "PublishResult",
    "QueueStats",
    "SQLiteOutboxStore",
    "SignalQueue",
    "Sink",
    "SinkConfig",
    "SinkMetrics",
    "SinkStats",
    "WatchedOutboxStore",
    "WebSocketSink",
    "WebhookSink",
    "memory_deduper",
]
