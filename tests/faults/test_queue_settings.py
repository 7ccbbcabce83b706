"""Non-finite, out-of-range and wrong-typed settings for every queue and breaker
constructor raise ConfigError naming the setting (generated over the arguments)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fokha_integration.errors import ConfigError
from fokha_integration.queue import (
    CallableSink,
    MemoryOutboxStore,
    SignalQueue,
    SinkConfig,
    SQLiteOutboxStore,
)
from fokha_integration.resilience import BreakerConfig, CircuitBreaker


async def _ok(envelope: Any) -> None:
    return None


def _queue(**kw: Any) -> Any:
    return SignalQueue(sinks=[CallableSink(_ok, name="a")], **kw)


def _sqlite(tmp: Path) -> Callable[..., Any]:
    return lambda **kw: SQLiteOutboxStore(tmp / "x.db", **kw)


# (constructor, setting, values that must be refused)
CASES: list[tuple[str, Callable[..., Any], str, list[Any]]] = [
    ("SignalQueue", _queue, "max_in_flight", [0, 1.5, True, "8", math.nan]),
    ("SignalQueue", _queue, "delivery_timeout", [0, -1, math.nan, math.inf, "1", True]),
    ("SignalQueue", _queue, "poll_interval", [0, -1, math.nan, math.inf, "1"]),
    ("SignalQueue", _queue, "max_breaker_wait", [0, math.nan, math.inf, "1"]),
    ("SignalQueue", _queue, "claim_lease", [0, -1, math.nan, math.inf, "1", True]),
    ("SignalQueue", _queue, "close_timeout", [-1, math.nan, math.inf, "1"]),
    ("SinkConfig", SinkConfig, "max_in_flight", [0, 1.5, True, math.nan]),
    ("SinkConfig", SinkConfig, "delivery_timeout", [0, math.nan, math.inf, "2"]),
    ("MemoryOutboxStore", MemoryOutboxStore, "max_pending", [0, 1.5, math.nan, True]),
    ("MemoryOutboxStore", MemoryOutboxStore, "max_dead_letters", [-1, 1.5, math.inf]),
    ("BreakerConfig", BreakerConfig, "open_duration", [math.nan, math.inf, -1, "1", True]),
    ("BreakerConfig", BreakerConfig, "failure_threshold", [0, 1.5, math.nan, True]),
    ("BreakerConfig", BreakerConfig, "failure_rate_threshold", [0, 1.5, math.nan]),
    ("BreakerConfig", BreakerConfig, "probe_timeout", [0, math.nan, math.inf]),
    ("BreakerConfig", BreakerConfig, "open_backoff", [0.5, math.nan, math.inf]),
    ("BreakerConfig", BreakerConfig, "window_size", [0, 2.5, True]),
    ("BreakerConfig", BreakerConfig, "slow_call_duration", [0, math.nan, math.inf]),
    ("CircuitBreaker", CircuitBreaker, "open_duration", [math.nan, math.inf, -1, "1"]),
]


@pytest.mark.parametrize(
    ("ctor", "setting", "bad"),
    [(c[1], c[2], v) for c in CASES for v in c[3]],
    ids=[f"{c[0]}-{c[2]}-{v!r}" for c in CASES for v in c[3]],
)
def test_a_bad_setting_raises_config_error_naming_it(
    ctor: Callable[..., Any], setting: str, bad: Any
) -> None:
    """The constructor refuses the value with a ConfigError whose field is the setting."""
    with pytest.raises(ConfigError) as info:
        ctor(**{setting: bad})
    assert info.value.field == setting


@pytest.mark.parametrize(
    "setting",
    ["max_pending", "file_check_interval"],
)
def test_sqlite_store_settings_are_checked(setting: str, tmp_path: Path) -> None:
    """SQLiteOutboxStore refuses NaN for each numeric setting."""
    with pytest.raises(ConfigError) as info:
        _sqlite(tmp_path)(**{setting: math.nan})
    assert info.value.field == setting


@settings(max_examples=60, deadline=None)
@given(
    setting=st.sampled_from(["delivery_timeout", "poll_interval", "max_breaker_wait"]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).filter(
            lambda x: not (math.isfinite(x) and x > 0)
        ),
        st.text(max_size=3),
        st.booleans(),
    ),
)
def test_generated_bad_queue_settings_are_refused(setting: str, value: Any) -> None:
    """Any non-positive, non-finite or non-numeric timing setting is a ConfigError."""
    with pytest.raises(ConfigError):
        _queue(**{setting: value})
