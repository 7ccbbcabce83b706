"""Every public constructor refuses NaN, infinities and wrong types (issue 13).

Generated from the signatures: for each public class (``fokha_integration.__all__``
and the backend classes that live in their own modules), every parameter annotated
as a number or a bool is fed hostile values drawn by Hypothesis, and the
constructor must raise :class:`ConfigError` whose ``field`` names that parameter
(models raise :class:`ValidationError`, the error for outside data). A class added
to ``__all__`` must be listed in one of the tables below, so nothing slips by.

Classes of areas another branch is reworking (issue 12) are marked xfail (not
strict) with their owner; the lead removes the mark once that area lands.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fokha_integration
from fokha_integration.errors import ConfigError, ValidationError

_TMP = Path(tempfile.mkdtemp(prefix="fokha-constructors-"))


async def _deliver(envelope: object) -> None:
    return None


def _monitor() -> Any:
    return fokha_integration.HealthMonitor()


# Class path -> the required arguments of a valid call (everything else defaulted).
REQUIRED: dict[str, Callable[[], dict[str, Any]]] = {
    "AlertRouter": lambda: {"sink": lambda notice: None},
    "CallableSink": lambda: {"fn": _deliver},
    "FileBridge": lambda: {"root": _TMP / "bridge"},
    "FileBridgeSink": lambda: {"bridge": object()},
    "HealthServer": lambda: {"monitor": _monitor()},
    "RateLimiter": lambda: {"rate": 10.0},
    "SQLiteDedupBackend": lambda: {"path": _TMP / "dedup.db"},
    "SQLiteOutboxStore": lambda: {"path": _TMP / "outbox.db"},
    "SyncFileBridge": lambda: {"root": _TMP / "sync-bridge"},
    "TokenAuthenticator": lambda: {"secret": b"k" * 32},
    "WebSocketClient": lambda: {"url": "ws://127.0.0.1:9/"},
    "WebhookSink": lambda: {"url": "http://127.0.0.1:9/hook", "secret": "s" * 32},
    "dedup.redis.RedisDedupBackend": lambda: {"url": "redis://127.0.0.1:9/0", "namespace": "t"},
    "ws.brokers.redis.RedisBroker": lambda: {"url": "redis://127.0.0.1:9/0"},
    "queue.redis_streams.RedisStreamsStore": lambda: {"url": "redis://127.0.0.1:9/0"},
    "health.Check": lambda: {"component": "c", "probe": lambda ctx: None},
    "health.http_check": lambda: {"url": "http://127.0.0.1:9/"},
    "health.tcp_check": lambda: {"host": "127.0.0.1", "port": 9},
    "health.websocket_check": lambda: {"url": "ws://127.0.0.1:9/"},
    "health.file_check": lambda: {"path": _TMP / "heartbeat", "max_age": 5.0},
    "health.websocket_server_check": lambda: {"server": object()},
    # models: outside data, ValidationError
    "Signal": lambda: {"symbol": "EURUSD", "direction": "BUY", "volume": 1.0},
    "PriceTick": lambda: {"symbol": "EURUSD", "bid": 1.0, "ask": 1.1},
    "Envelope": lambda: {"type": "signal", "key": "k", "payload": {}},
    "Notification": lambda: {"title": "t"},
    "sync.HybridClock": lambda: {"node_id": "n1"},
    "queue.postgres.PostgresOutboxStore": lambda: {"dsn": "postgresql://127.0.0.1:9/x"},
    "dedup.postgres.PostgresDedupBackend": lambda: {"dsn": "postgresql://127.0.0.1:9/x"},
    "sync.postgres.PostgresSyncStore": lambda: {"dsn": "postgresql://127.0.0.1:9/x"},
}

# Public classes whose constructors take settings (ConfigError expected).
SETTINGS = [
    "AlertRouter",
    "BreakerConfig",
    "CallableSink",
    "DedupCache",
    "FileBridge",
    "FileBridgeSink",
    "HealthMonitor",
    "HealthServer",
    "ManualClock",
    "MemoryDedupBackend",
    "MemoryDeduper",
    "MemoryOutboxStore",
    "RateLimiter",
    "RetryPolicy",
    "SQLiteDedupBackend",
    "SQLiteOutboxStore",
    "SignalQueue",
    "SinkConfig",
    "SlowClientPolicy",
    "SyncFileBridge",
    "TokenAuthenticator",
    "WebSocketClient",
    "WebSocketServer",
    "WebhookSink",
    # backends and config objects outside __all__
    "dedup.redis.RedisDedupBackend",
    "queue.redis_streams.RedisStreamsStore",
    "ws.brokers.redis.RedisBroker",
    "ws.Limits",
    "bridge.PollConfig",
    "health.Check",
    # check factories (functions that build a Check)
    "health.http_check",
    "health.tcp_check",
    "health.websocket_check",
    "health.redis_check",
    "health.file_check",
    "health.loop_lag_check",
    "health.websocket_server_check",
    # config objects and backends of the areas that came after issue 13
    "sync.HybridClock",
    "sync.Limits",
    "sync.SyncClientConfig",
    "sync.SyncConfig",
    "http.ApiAppConfig",
    "http.ApiClientConfig",
    "http.IdempotencyConfig",
    "http.WebhookReceiverConfig",
    "ws.HistoryPolicy",
    "ws.LocalBroker",
    "queue.postgres.PostgresOutboxConfig",
    "queue.postgres.PostgresOutboxStore",
    "dedup.postgres.PostgresDedupBackend",
    "sync.postgres.PostgresSyncStore",
]
# Data from outside (ValidationError expected).
DATA = ["Signal", "PriceTick", "Envelope", "Notification", "DeliveryResult"]
# Records the library makes and hands out (snapshots, events, results): not user input.
RECORDS = {
    "AlertStats",
    "CheckStats",
    "HealthStats",
    "RateLimiterStats",
    "BreakerMetrics",
    "ChannelMessage",
    "ClaimResult",
    "DeadLetter",
    "DedupStats",
    "FieldInfo",
    "PublishResult",
    "RetryDetails",
    "SinkMetrics",
    "StateChange",
    "StateEvent",
    "StatusChange",
    "WebSocketMetrics",
}
# Classes with no number or bool parameter at all (nothing to generate).
# (CircuitBreaker's numbers are BreakerConfig's, tested there; its **config_kwargs
# forwarding is being removed on the "queue" branch.)
NO_NUMBERS = {
    "BreakerRegistry",
    "CircuitBreaker",
    "MetricsRegistry",
    "Model",
    "SystemClock",
    "WebSocketSink",
}

# Owner of each class still being reworked on another branch (issue 12).
OWNERS = {}


def _resolve(path: str) -> type[Any]:
    if "." not in path:
        return getattr(fokha_integration, path)  # type: ignore[no-any-return]
    module, _, name = path.rpartition(".")
    try:
        mod = importlib.import_module(f"fokha_integration.{module}")
    except ImportError as exc:  # an optional extra that is not installed
        pytest.skip(f"{path}: {exc}")
    return getattr(mod, name)  # type: ignore[no-any-return]


def _kind(annotation: object) -> tuple[str, bool] | None:
    """('float'|'int'|'bool', optional) for a number/bool annotation, else None."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = {p.strip() for p in str(text).split("|")}
    optional = "None" in parts
    parts.discard("None")
    if parts == {"bool"}:
        return "bool", optional
    if parts == {"int"}:
        return "int", optional
    if parts <= {"int", "float"} and "float" in parts:
        return "float", optional
    return None


_NAN_INF = st.sampled_from([math.nan, math.inf, -math.inf])
_WRONG_TYPE = st.booleans() | st.text(max_size=3) | st.just(b"1") | st.just([1])


def _hostile(kind: str, optional: bool) -> st.SearchStrategy[object]:
    if kind == "float":
        values = _NAN_INF | _WRONG_TYPE | st.sampled_from([10**400, -(10**400)])
    elif kind == "int":
        values = st.floats(allow_nan=True, allow_infinity=True) | _WRONG_TYPE
    else:  # bool: anything that is not a real bool
        values = st.integers() | st.floats() | st.text(max_size=3) | st.just(b"") | st.just([True])
    return values if optional else values | st.none()


def _cases() -> list[Any]:
    cases = []
    for path in SETTINGS + DATA:
        cls = _resolve(path)
        for param in inspect.signature(cls).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            found = _kind(param.annotation)
            if found is None:
                continue
            marks = []
            if path in OWNERS:
                reason = f"area of helper {OWNERS[path]!r} (issue 12); lead flips after merging"
                marks.append(pytest.mark.xfail(reason=reason, strict=False))
            cases.append(
                pytest.param(path, param.name, *found, id=f"{path}-{param.name}", marks=marks)
            )
    return cases


@pytest.mark.parametrize(("path", "name", "kind", "optional"), _cases())
# No shrinking: a hostile value is already minimal, and the xfail cases of other
# areas would otherwise spend seconds each shrinking a failure nobody reads.
@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_constructor_refuses_hostile_setting(
    path: str, name: str, kind: str, optional: bool, data: st.DataObject
) -> None:
    """A NaN, infinite or wrongly typed number/bool argument raises an error naming it."""
    value = data.draw(_hostile(kind, optional), label=name)
    cls = _resolve(path)
    kwargs = REQUIRED.get(path, dict)()
    kwargs[name] = value
    expected = ValidationError if path in DATA else ConfigError
    try:
        made = cls(**kwargs)
    except expected as exc:
        # A policy object may prefix the setting with where it goes ("history.count").
        field = exc.field.rpartition(".")[2] if exc.field.endswith(f".{name}") else exc.field
        assert field == name or field.startswith((f"{name}.", f"{name}[")), exc
        return
    _dispose(made)
    pytest.fail(f"{path}({name}={value!r}) was accepted")


def _dispose(made: object) -> None:
    # An accepted bad value fails the test; release what a backend started.
    executor = getattr(made, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False)


def _public_classes() -> set[str]:
    names = set()
    for name in fokha_integration.__all__:
        obj = getattr(fokha_integration, name)
        if not inspect.isclass(obj) or issubclass(obj, (BaseException, enum.Enum)):
            continue
        if getattr(obj, "_is_protocol", False):
            continue
        names.add(name)
    return names


def test_every_public_class_is_classified() -> None:
    """Each public class is in SETTINGS, DATA, RECORDS or NO_NUMBERS (so none slips by)."""
    known = set(SETTINGS) | set(DATA) | RECORDS | NO_NUMBERS
    assert sorted(_public_classes() - known) == []


def test_classes_without_numbers_really_have_none() -> None:
    """NO_NUMBERS is honest: those constructors take no number or bool."""
    for path in NO_NUMBERS:
        params = inspect.signature(_resolve(path)).parameters.values()
        named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert [p.name for p in named if _kind(p.annotation) is not None] == [], path
