"""fokha-integration: integration primitives for multi-system trading setups.

The public API is re-exported here; ``__all__`` is the list of supported names
(the API reference lists the same names, and a test keeps the two in step).

Names are imported lazily (PEP 562 ``__getattr__``, after websockets'
``lazy_import``): ``import fokha_integration`` or ``import
fokha_integration.errors`` costs a few milliseconds and pulls in neither aiohttp
nor websockets; ``fokha_integration.WebSocketServer`` imports the WebSocket
package the first time it is read. Type checkers and IDEs see every name through
the ``TYPE_CHECKING`` imports below. Optional backends (Redis, ...) live in their
own modules and import their extra only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .bridge import FileBridge, ReplyStatus, SyncFileBridge, find_mt5_data_folders
    from .clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
    from .dedup import (
        ClaimResult,
        ClaimStatus,
        DedupCache,
        DedupStats,
        MemoryDedupBackend,
        SQLiteDedupBackend,
        content_key,
        signal_key,
    )
    from .errors import (
        BackendError,
        BackendUnavailableError,
        CircuitOpenError,
        ClosedError,
        ConfigError,
        FokhaError,
        FrameError,
        OperationTimeoutError,
        ProtocolError,
        RateLimitedError,
        RetryExhaustedError,
        ValidationError,
    )
    from .health import (
        AlertRouter,
        HealthMonitor,
        HealthServer,
        HealthStatus,
        MetricsRegistry,
        StatusChange,
        add_health_routes,
    )
    from .http import (
        WebhookVerificationError,
        generate_webhook_secret,
        sign_webhook,
        verify_webhook,
        webhook_headers,
    )
    from .models import (
        Direction,
        Envelope,
        FieldInfo,
        Model,
        Notification,
        PriceTick,
        Priority,
        Signal,
        canonical_json,
        model_fields,
        new_id,
    )
    from .queue import (
        CallableSink,
        DeadLetter,
        DeliveryResult,
        FileBridgeSink,
        MemoryDeduper,
        MemoryOutboxStore,
        OutboxStore,
        PublishResult,
        SignalQueue,
        Sink,
        SinkConfig,
        SinkMetrics,
        SQLiteOutboxStore,
        WebhookSink,
        WebSocketSink,
    )
    from .resilience import (
        BreakerConfig,
        BreakerMetrics,
        BreakerRegistry,
        BreakerState,
        CircuitBreaker,
        Outcome,
        RateLimiter,
        RetryDetails,
        RetryPolicy,
        StateChange,
        retry_testing,
    )
    from .ws import (
        ChannelMessage,
        ClientState,
        SlowClientPolicy,
        StateEvent,
        TokenAuthenticator,
        WebSocketClient,
        WebSocketMetrics,
        WebSocketServer,
    )

# Public name -> the subpackage or module that defines it.
_LAZY: dict[str, str] = {
    "FileBridge": ".bridge",
    "ReplyStatus": ".bridge",
    "SyncFileBridge": ".bridge",
    "find_mt5_data_folders": ".bridge",
    "Clock": ".clock",
    "ManualClock": ".clock",
    "SYSTEM_CLOCK": ".clock",
    "SystemClock": ".clock",
    "ClaimResult": ".dedup",
    "ClaimStatus": ".dedup",
    "DedupCache": ".dedup",
    "DedupStats": ".dedup",
    "MemoryDedupBackend": ".dedup",
    "SQLiteDedupBackend": ".dedup",
    "content_key": ".dedup",
    "signal_key": ".dedup",
    "BackendError": ".errors",
    "BackendUnavailableError": ".errors",
    "CircuitOpenError": ".errors",
    "ClosedError": ".errors",
    "ConfigError": ".errors",
    "FokhaError": ".errors",
    "FrameError": ".errors",
    "OperationTimeoutError": ".errors",
    "ProtocolError": ".errors",
    "RateLimitedError": ".errors",
    "RetryExhaustedError": ".errors",
    "ValidationError": ".errors",
    "AlertRouter": ".health",
    "HealthMonitor": ".health",
    "HealthServer": ".health",
    "HealthStatus": ".health",
    "MetricsRegistry": ".health",
    "StatusChange": ".health",
    "add_health_routes": ".health",
    "WebhookVerificationError": ".http",
    "generate_webhook_secret": ".http",
    "sign_webhook": ".http",
    "verify_webhook": ".http",
    "webhook_headers": ".http",
    "Direction": ".models",
    "Envelope": ".models",
    "FieldInfo": ".models",
    "Model": ".models",
    "Notification": ".models",
    "PriceTick": ".models",
    "Priority": ".models",
    "Signal": ".models",
    "canonical_json": ".models",
    "model_fields": ".models",
    "new_id": ".models",
    "CallableSink": ".queue",
    "DeadLetter": ".queue",
    "DeliveryResult": ".queue",
    "FileBridgeSink": ".queue",
    "MemoryDeduper": ".queue",
    "MemoryOutboxStore": ".queue",
    "OutboxStore": ".queue",
    "PublishResult": ".queue",
    "SQLiteOutboxStore": ".queue",
    "SignalQueue": ".queue",
    "Sink": ".queue",
    "SinkConfig": ".queue",
    "SinkMetrics": ".queue",
    "WebSocketSink": ".queue",
    "WebhookSink": ".queue",
    "BreakerConfig": ".resilience",
    "BreakerMetrics": ".resilience",
    "BreakerRegistry": ".resilience",
    "BreakerState": ".resilience",
    "CircuitBreaker": ".resilience",
    "Outcome": ".resilience",
    "RateLimiter": ".resilience",
    "RetryDetails": ".resilience",
    "RetryPolicy": ".resilience",
    "StateChange": ".resilience",
    "retry_testing": ".resilience",
    "ChannelMessage": ".ws",
    "ClientState": ".ws",
    "SlowClientPolicy": ".ws",
    "StateEvent": ".ws",
    "TokenAuthenticator": ".ws",
    "WebSocketClient": ".ws",
    "WebSocketMetrics": ".ws",
    "WebSocketServer": ".ws",
}

__all__ = [
    "SYSTEM_CLOCK",
    "AlertRouter",
    "BackendError",
    "BackendUnavailableError",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "CallableSink",
    "ChannelMessage",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClaimResult",
    "ClaimStatus",
    "ClientState",
    "Clock",
    "ClosedError",
    "ConfigError",
    "DeadLetter",
    "DedupCache",
    "DedupStats",
    "DeliveryResult",
    "Direction",
    "Envelope",
    "FieldInfo",
    "FileBridge",
    "FileBridgeSink",
    "FokhaError",
    "FrameError",
    "HealthMonitor",
    "HealthServer",
    "HealthStatus",
    "ManualClock",
    "MemoryDedupBackend",
    "MemoryDeduper",
    "MemoryOutboxStore",
    "MetricsRegistry",
    "Model",
    "Notification",
    "OperationTimeoutError",
    "OutboxStore",
    "Outcome",
    "PriceTick",
    "Priority",
    "ProtocolError",
    "PublishResult",
    "RateLimitedError",
    "RateLimiter",
    "ReplyStatus",
    "RetryDetails",
    "RetryExhaustedError",
    "RetryPolicy",
    "SQLiteDedupBackend",
    "SQLiteOutboxStore",
    "Signal",
    "SignalQueue",
    "Sink",
    "SinkConfig",
    "SinkMetrics",
    "SlowClientPolicy",
    "StateChange",
    "StateEvent",
    "StatusChange",
    "SyncFileBridge",
    "SystemClock",
    "TokenAuthenticator",
    "ValidationError",
    "WebSocketClient",
    "WebSocketMetrics",
    "WebSocketServer",
    "WebSocketSink",
    "WebhookSink",
    "WebhookVerificationError",
    "__version__",
    "add_health_routes",
    "canonical_json",
    "content_key",
    "find_mt5_data_folders",
    "generate_webhook_secret",
    "model_fields",
    "new_id",
    "retry_testing",
    "sign_webhook",
    "signal_key",
    "verify_webhook",
    "webhook_headers",
]


def __getattr__(name: str) -> Any:
    """Import ``name``'s module on first access and cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Every public name, including the ones not imported yet."""
    return sorted(set(globals()) | set(__all__))
