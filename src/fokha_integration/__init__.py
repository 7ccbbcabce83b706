"""fokha-integration: integration primitives for multi-system trading setups.

The public API is re-exported here; ``__all__`` is the list of supported names
(``docs/reference.md`` lists the same names, and a test keeps the two in step).
Optional backends (Redis, ...) live in their own modules and import their extra
only when used.
"""

from ._version import __version__
from .clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
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

__all__ = [
    "SYSTEM_CLOCK",
    "AlertRouter",
    "BackendError",
    "BackendUnavailableError",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ClosedError",
    "ConfigError",
    "Direction",
    "Envelope",
    "FieldInfo",
    "FokhaError",
    "FrameError",
    "HealthMonitor",
    "HealthServer",
    "HealthStatus",
    "ManualClock",
    "MetricsRegistry",
    "Model",
    "Notification",
    "OperationTimeoutError",
    "Outcome",
    "PriceTick",
    "Priority",
    "ProtocolError",
    "RateLimitedError",
    "RateLimiter",
    "RetryDetails",
    "RetryExhaustedError",
    "RetryPolicy",
    "Signal",
    "StateChange",
    "StatusChange",
    "SystemClock",
    "ValidationError",
    "__version__",
    "add_health_routes",
    "canonical_json",
    "model_fields",
    "new_id",
    "retry_testing",
]
