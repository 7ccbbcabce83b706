"""fokha-integration: integration primitives for multi-system trading setups.

The public API is re-exported here; ``__all__`` is the list of supported names
(``docs/reference.md`` lists the same names, and a test keeps the two in step).
Optional backends (Redis, ...) live in their own modules and import their extra
only when used.
"""

from ._version import __version__
from .bridge import FileBridge, ReplyStatus, SyncFileBridge, find_mt5_data_folders
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
    "FileBridge",
    "FokhaError",
    "FrameError",
    "ManualClock",
    "Model",
    "Notification",
    "OperationTimeoutError",
    "Outcome",
    "PriceTick",
    "Priority",
    "ProtocolError",
    "RateLimitedError",
    "RateLimiter",
    "ReplyStatus",
    "RetryDetails",
    "RetryExhaustedError",
    "RetryPolicy",
    "Signal",
    "StateChange",
    "SyncFileBridge",
    "SystemClock",
    "ValidationError",
    "__version__",
    "canonical_json",
    "find_mt5_data_folders",
    "model_fields",
    "new_id",
    "retry_testing",
]
