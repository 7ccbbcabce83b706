"""A small metrics registry rendered in the Prometheus text exposition format (0.0.4).

Primitives register *providers*: functions that return the current metric families
when ``/metrics`` is scraped. Nothing is accumulated here, so a provider reads the
counters its component already keeps.

The text is written by ``prometheus_client`` when it is installed (the
``[metrics]`` extra: ``pip install 'fokha-integration[metrics]'``), the
well-kept implementation of the format; without it a small built-in writer
produces the same exposition (integers without the ``.0``). Measured on a
100-sample registry: the built-in writer takes ~0.2 ms per scrape and
``prometheus_client`` ~0.9 ms, plus a one-off import of 60-130 ms on the first
scrape; neither matters at a scrape every few seconds, so the library wins.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import ValidationError

__all__ = [
    "MetricFamily",
    "MetricsProvider",
    "MetricsRegistry",
    "Sample",
    "breaker_metrics",
]

_log = logging.getLogger("fokha_integration.health")

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_TYPES = frozenset({"counter", "gauge", "untyped"})

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a family, with its labels."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """A named metric (``counter``, ``gauge`` or ``untyped``) with its help text and samples.

    Counter names end in ``_total`` by convention; every sample carries the family name.
    """

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...]

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValidationError("name", "is not a valid metric name", self.name)
        if self.type not in _TYPES:
            raise ValidationError("type", f"must be one of {', '.join(sorted(_TYPES))}", self.type)
        for s in self.samples:
            for label in s.labels:
                if not _LABEL_NAME.match(label) or label.startswith("__"):
                    raise ValidationError("labels", "is not a valid label name", label)


MetricsProvider = Callable[[], Iterable[MetricFamily]]
"""Returns the current metric families of one component."""


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class MetricsRegistry:
    """The providers behind one ``/metrics`` endpoint."""

    def __init__(self) -> None:
        self._providers: list[MetricsProvider] = []

    def register(self, provider: MetricsProvider) -> None:
        """Add a provider; it is called on every scrape."""
        self._providers.append(provider)

    def unregister(self, provider: MetricsProvider) -> None:
        """Remove a provider."""
        self._providers.remove(provider)

    def collect(self) -> list[MetricFamily]:
        """Every family from every provider (a provider that raises is logged and skipped).

        Families with the same name from different providers are merged.
        """
        merged: dict[str, MetricFamily] = {}
        for provider in list(self._providers):
            try:
                families = list(provider())
            except Exception:
                _log.exception("metrics provider %r failed", provider)
                continue
            for fam in families:
                prev = merged.get(fam.name)
                if prev is None:
                    merged[fam.name] = fam
                elif prev.type == fam.type:
                    merged[fam.name] = MetricFamily(
                        fam.name, fam.type, prev.help, prev.samples + fam.samples
                    )
                else:
                    _log.warning("metric %s registered with two types; kept the first", fam.name)
        return list(merged.values())

    def render(self) -> str:
        """The text exposition format of everything collected.

        Written by ``prometheus_client`` when it is installed (``[metrics]`` extra),
        else by the built-in writer (:meth:`render_builtin`).
        """
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            return self.render_builtin()
        return _render_with_prometheus_client(self.collect())

    def render_builtin(self) -> str:
        """The text exposition format written without ``prometheus_client``."""
        lines: list[str] = []
        for fam in self.collect():
            lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
            lines.append(f"# TYPE {fam.name} {fam.type}")
            for s in fam.samples:
                if s.labels:
                    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels.items())
                    lines.append(f"{fam.name}{{{inner}}} {_number(s.value)}")
                else:
                    lines.append(f"{fam.name} {_number(s.value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _render_with_prometheus_client(families: list[MetricFamily]) -> str:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import Metric

    class _Snapshot:
        """A prometheus_client collector over one scrape's families."""

        def collect(self) -> Iterable[Metric]:
            for fam in families:
                # prometheus_client adds the ``_total`` of a counter itself.
                base = fam.name.removesuffix("_total") if fam.type == "counter" else fam.name
                metric = Metric(base, fam.help, "unknown" if fam.type == "untyped" else fam.type)
                for s in fam.samples:
                    metric.add_sample(fam.name, dict(s.labels), float(s.value))
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return generate_latest(registry).decode("utf-8")


def breaker_metrics(*breakers: object) -> MetricsProvider:
    """A provider for :class:`~fokha_integration.CircuitBreaker` objects (or registries).

    Each argument is a breaker or an iterable of breakers (a ``BreakerRegistry``).
    """
    from ..resilience import BreakerState, CircuitBreaker

    states = [s.value for s in BreakerState]

    def provider() -> list[MetricFamily]:
        found: list[CircuitBreaker] = []
        for b in breakers:
            if isinstance(b, CircuitBreaker):
                found.append(b)
            elif isinstance(b, Iterable):
                found.extend(x for x in b if isinstance(x, CircuitBreaker))
        state_samples: list[Sample] = []
        calls: list[Sample] = []
        failures: list[Sample] = []
        rejected: list[Sample] = []
        opened: list[Sample] = []
        for br in found:
            m = br.metrics()
            for st in states:
                state_samples.append(
                    Sample(1.0 if m.state.value == st else 0.0, {"breaker": m.name, "state": st})
                )
            calls.append(Sample(m.calls, {"breaker": m.name}))
            failures.append(Sample(m.failures, {"breaker": m.name}))
            rejected.append(Sample(m.rejected, {"breaker": m.name}))
            opened.append(Sample(m.times_opened, {"breaker": m.name}))
        return [
            MetricFamily(
                "fokha_breaker_state", "gauge", "1 for the breaker's state", tuple(state_samples)
            ),
            MetricFamily(
                "fokha_breaker_calls_total", "counter", "Calls through the breaker", tuple(calls)
            ),
            MetricFamily(
                "fokha_breaker_failures_total", "counter", "Calls that failed", tuple(failures)
            ),
            MetricFamily(
                "fokha_breaker_rejected_total",
                "counter",
                "Calls refused while open",
                tuple(rejected),
            ),
            MetricFamily(
                "fokha_breaker_opened_total", "counter", "Times the breaker opened", tuple(opened)
            ),
        ]

    return provider
