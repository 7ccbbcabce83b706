"""Resilience primitives: retry with backoff, circuit breaker, rate limiter.

Every other part of the library uses these; they are also useful alone. All three
take an injectable ``clock`` so their timing is tested without sleeping.
"""

from ._breaker import BreakerRegistry, CircuitBreaker, ErrorClassifier, StateListener
from ._breaker_core import (
    BreakerConfig,
    BreakerMetrics,
    BreakerState,
    BreakerStateMachine,
    Outcome,
    Permit,
    StateChange,
)
from ._ratelimit import RateLimiter, RateLimiterStats
from ._retry import (
    DEFAULT_RETRY_STATUSES,
    RetryDetails,
    RetryHook,
    RetryPolicy,
    parse_retry_after,
    retry_testing,
)

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStateMachine",
    "CircuitBreaker",
    "ErrorClassifier",
    "Outcome",
    "Permit",
    "RateLimiter",
    "RateLimiterStats",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "StateChange",
    "StateListener",
    "parse_retry_after",
    "retry_testing",
]
