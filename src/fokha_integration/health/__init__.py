"""Health monitoring: concurrent checks with hysteresis, health endpoints, metrics, alerts.

- :class:`HealthMonitor` runs each :class:`Check` as its own background task
  (interval with jitter, timeout) and keeps the latest results;
- the sans-I/O rules (hysteresis, staleness, aggregation) are in
  :class:`CheckState` and :func:`aggregate`;
- :func:`add_health_routes` / :class:`HealthServer` serve ``/health``
  (``application/health+json``), ``/health/live``, ``/health/ready``,
  ``/health/{group}`` and ``/metrics`` (Prometheus text format);
- :class:`AlertRouter` turns status changes into alert, resolve and reminder
  notices for a sink (``async def deliver(envelope)``) or a webhook.

See ``docs/health.md``.
"""

from ._alerts import AlertRouter, AlertSink, AlertStats
from ._checks import (
    Check,
    Observation,
    Probe,
    ProbeContext,
    StreamingServer,
    breaker_check,
    callable_check,
    file_check,
    http_check,
    loop_lag_check,
    redis_check,
    tcp_check,
    websocket_check,
    websocket_server_check,
)
from ._config import load_targets, parse_targets
from ._http import HEALTH_CONTENT_TYPE, HealthServer, add_health_routes, render_health
from ._metrics import MetricFamily, MetricsProvider, MetricsRegistry, Sample, breaker_metrics
from ._monitor import (
    CheckStats,
    HealthMonitor,
    HealthReport,
    HealthStats,
    ResultListener,
    StatusChange,
    StatusListener,
)
from ._state import CheckResult, CheckState, CheckView, HealthStatus, ObservedValue, aggregate

__all__ = [
    "HEALTH_CONTENT_TYPE",
    "AlertRouter",
    "AlertSink",
    "AlertStats",
    "Check",
    "CheckResult",
    "CheckState",
    "CheckStats",
    "CheckView",
    "HealthMonitor",
    "HealthReport",
    "HealthServer",
    "HealthStats",
    "HealthStatus",
    "MetricFamily",
    "MetricsProvider",
    "MetricsRegistry",
    "Observation",
    "ObservedValue",
    "Probe",
    "ProbeContext",
    "ResultListener",
    "Sample",
    "StatusChange",
    "StatusListener",
    "StreamingServer",
    "add_health_routes",
    "aggregate",
    "breaker_check",
    "breaker_metrics",
    "callable_check",
    "file_check",
    "http_check",
    "load_targets",
    "loop_lag_check",
    "parse_targets",
    "redis_check",
    "render_health",
    "tcp_check",
    "websocket_check",
    "websocket_server_check",
]
